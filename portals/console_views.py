"""The console page of a VM: xterm.js for its serial console, noVNC for its VNC display.

The page asks for a one-time ticket (POST /api/v1/vms/<id>/console/, with the CSRF token),
opens the websocket the answer names (portals/console.py) and wires it to the terminal or
the VNC canvas (static/olvm/console.js). The admin portal routes it at
/vms/<id>/console/; the VM portal reuses the class with its own base template:

    path(
        "vm-portal/vms/<uuid:pk>/console/",
        ConsoleView.as_view(base_template="vmportal/base.html", back_url_name="vmportal:vm-detail",
                            admin_only=False),
        name="vm-console",
    )

and, to answer 404 for VMs the user cannot see, a subclass whose `get_queryset()` is the
user's visible VMs. Who may open the console at all is `compute.services.may_open_console`.
"""

from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.generic import TemplateView

from compute.choices import ConsoleType
from compute.models import VirtualMachine
from compute.services import CONSOLE_STATUSES, CONSOLE_TICKET_TTL, may_open_console

from .context_processors import focus_tree_on

KIND_LABELS = {"serial": "Serial console", "vnc": "VNC display"}


class ConsoleView(LoginRequiredMixin, TemplateView):
    template_name = "portals/console.html"
    base_template = "base.html"  # the page extends this; its `content` block holds the console
    back_url_name = "portals:vm-detail"  # where "Back to the VM" goes (takes the VM's id)
    section = "portals:vm-list"
    admin_only = True  # the admin portal's chrome (its tree) is for administrators only

    def get_queryset(self):
        return VirtualMachine.objects.select_related("run_on_host", "cluster")

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        user = self.request.user
        if self.admin_only and not user.is_staff:
            raise PermissionDenied("The administration portal is for administrators.")
        vm = get_object_or_404(self.get_queryset(), pk=kwargs["pk"])
        if not may_open_console(user, vm):
            raise PermissionDenied("You may not open the console of this VM.")
        kinds = ["vnc", "serial"] if vm.console_type == ConsoleType.VNC else ["serial"]
        kind = self.request.GET.get("kind")
        if kind not in kinds:
            kind = kinds[0]
        focus_tree_on(self.request, vm)
        context.update(
            base_template=self.base_template,
            title=f"Console of {vm.name}",
            section=self.section,
            object=vm,
            vm=vm,
            kind=kind,
            kinds=[(k, KIND_LABELS[k]) for k in kinds],
            running=vm.status in CONSOLE_STATUSES and vm.run_on_host_id is not None,
            back_url=reverse(self.back_url_name, args=[vm.pk]),
            console_config={
                "vmId": str(vm.pk),
                "kind": kind,
                "ticketUrl": reverse("api:vm-console", args=[vm.pk]),
                "ticketTtl": CONSOLE_TICKET_TTL,
            },
        )
        return context
