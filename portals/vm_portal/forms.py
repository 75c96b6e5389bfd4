"""Forms of the VM portal. They never write: the views call the services
(compute.services.create_own_vm, create_snapshot) and hand a ValidationError back with
`add_service_errors()`."""

from django import forms
from django.core.exceptions import ValidationError

from compute.models import InstanceType, Template, VirtualMachine
from inventory.choices import ActionGroup
from inventory.models import Cluster
from inventory.permissions import visible_clusters, visible_templates

from ..forms import bootstrap_widget, storage_allocation_field

TEMPLATE_CLUSTER = "The template's cluster"


class OwnVmForm(forms.Form):
    """New VM of one's own: a template the user may use, thin or cloned disks, optionally the
    cluster (for a template without one, or another cluster where they may create VMs), and
    the size."""

    name = forms.CharField(max_length=64, validators=VirtualMachine._meta.get_field("name").validators)
    template = forms.ModelChoiceField(queryset=Template.objects.none(), empty_label="Choose a template")
    storage_allocation = storage_allocation_field()
    cluster = forms.ModelChoiceField(queryset=Cluster.objects.none(), required=False, empty_label=TEMPLATE_CLUSTER)
    description = forms.CharField(max_length=255, required=False)
    instance_type = forms.ModelChoiceField(
        queryset=InstanceType.objects.all(), required=False, empty_label="As the template says"
    )
    vcpus = forms.IntegerField(label="Virtual CPUs", min_value=1, max_value=512, required=False)
    memory_mib = forms.IntegerField(label="Memory (MiB)", min_value=128, required=False)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["template"].queryset = visible_templates(user, ActionGroup.TEMPLATE_USE).select_related("cluster")
        self.fields["template"].label_from_instance = _template_label
        self.fields["cluster"].queryset = visible_clusters(user, ActionGroup.VM_CREATE).select_related("data_center")
        self.fields["cluster"].label_from_instance = lambda c: f"{c.name} ({c.data_center.name})"
        for name in ("vcpus", "memory_mib"):
            self.fields[name].widget.attrs["placeholder"] = "as the template says"
        for field in self.fields.values():
            bootstrap_widget(field.widget)

    def service_kwargs(self) -> dict:
        data = self.cleaned_data
        kwargs = {
            "name": data["name"],
            "template": data["template"],
            "cluster": data.get("cluster"),
            "clone": data["storage_allocation"] == "clone",
        }
        for name in ("description", "instance_type", "vcpus", "memory_mib"):
            if data.get(name) not in (None, ""):
                kwargs[name] = data[name]
        return kwargs

    def add_service_errors(self, exc: ValidationError) -> None:
        if not hasattr(exc, "error_dict"):
            self.add_error(None, exc.messages)
            return
        for name, errors in exc.error_dict.items():
            messages = [m for e in errors for m in e.messages]
            if name in self.fields:
                self.add_error(name, messages)
            else:
                prefix = "" if name in ("__all__", "non_field_errors") else f"{name}: "
                self.add_error(None, [f"{prefix}{m}" for m in messages])


def _template_label(template: Template) -> str:
    size = f"{template.vcpus} vCPU, {template.memory_mib} MiB"
    where = f" · {template.cluster.name}" if template.cluster_id else ""
    return f"{template} ({size}){where}"
