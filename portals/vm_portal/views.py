"""The VM portal: a user's own and granted VMs, their power actions and snapshots, and new
VMs from the templates they may use, within their quota.

Every page follows the VMs it shows live (static/olvm/live.js, docs/live.md: statuses, guest
facts, the detail page's buttons), watching only what `portals.live_access.can_watch` lets the
user watch. Every page reads through `inventory.permissions`: the list through `visible_vms()` (one
query for the page, whatever the number of grants); a VM page first finds the VM among the
user's visible VMs, and answers 403 — the 403 page, with nothing about the VM — when it
exists but is not theirs (404 when it does not exist). Each action checks its action group
(`vm.operate`, `vm.snapshot`) before calling the same compute services as the admin portal.
"""

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.views import View
from django.views.generic import ListView

from compute import services as compute_services
from compute.models import Snapshot, VirtualMachine
from compute.quota import quota_rows
from compute.statemachine import ACTIONS
from inventory.choices import ActionGroup
from inventory.exceptions import ConflictError
from inventory.permissions import allowed_actions, check, visible_templates, visible_vms

from ..context_processors import show_page_object
from ..forms import SnapshotForm
from ..views import SNAPSHOT_ACTIONS, VM_ACTION_STATES, VM_ACTIONS, Action, job_started
from .forms import OwnVmForm

PAGE_SIZE = 50
NOT_YOURS = (
    "This virtual machine is not yours: you do not own it and no role of yours covers it. "
    "Ask an administrator if you need it."
)
# The power buttons of the VM portal (the admin portal's actions of the same names).
PORTAL_ACTIONS = {name: VM_ACTIONS[name] for name in ("run", "shutdown", "poweroff", "reboot")}
LIST_FIELDS = ("id", "name", "status", "description", "os_type", "vcpus", "memory_mib", "guest_ips", "guest_hostname")


class VmPortalMixin(LoginRequiredMixin):
    """Any active user who signed in (staff too: the portal shows what their roles give them)."""

    login_url = reverse_lazy("vm_portal:login")


def error_text(exc: Exception) -> str:
    if isinstance(exc, ConflictError):
        return exc.message
    return " ".join(getattr(exc, "messages", [str(exc)]))


def users_vm(request, pk, queryset=None) -> VirtualMachine:
    """The VM `pk` if the user may see it; 403 (saying nothing about it) if it exists but is
    not theirs; 404 if there is no such VM."""
    found = visible_vms(request.user, queryset=queryset).filter(pk=pk).first()
    if found is not None:
        return found
    if VirtualMachine.objects.filter(pk=pk).exists():
        raise PermissionDenied(NOT_YOURS)
    raise Http404("No such virtual machine.")


def console_url(vm) -> str:
    """Where the console page of the VM portal lives (built by the console issue)."""
    return reverse("vm_portal:vm-detail", args=[vm.pk]) + "console/"


# Sign in ----------------------------------------------------------------------------------


class LoginView(auth_views.LoginView):
    template_name = "vm_portal/login.html"
    extra_context = {"vm_portal": True}  # base_plain.html: the VM portal's bar
    redirect_authenticated_user = True
    next_page = reverse_lazy("vm_portal:vm-list")


class LogoutView(auth_views.LogoutView):
    next_page = reverse_lazy("vm_portal:login")


# VMs --------------------------------------------------------------------------------------


class VmListView(VmPortalMixin, ListView):
    """The user's VMs: one query for the count and one for the page, whatever their grants."""

    template_name = "vm_portal/vm_list.html"
    context_object_name = "vm_list"
    paginate_by = PAGE_SIZE

    def get_queryset(self):
        return visible_vms(self.request.user).only(*LIST_FIELDS).order_by("name", "pk")

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["title"] = "My virtual machines"
        context["can_create"] = visible_templates(self.request.user, ActionGroup.TEMPLATE_USE).exists()
        return context


class VmDetailView(VmPortalMixin, View):
    def get(self, request, pk):
        vm = users_vm(request, pk, VirtualMachine.objects.select_related("template", "owner"))
        show_page_object(request, vm)  # live.js: this page's VM (its action buttons)
        allowed = allowed_actions(request.user, vm)
        can_operate = ActionGroup.VM_OPERATE in allowed
        context = {
            "title": vm.name,
            "vm": vm,
            "can_operate": can_operate,
            "can_console": ActionGroup.VM_CONSOLE in allowed,
            "can_snapshot": ActionGroup.VM_SNAPSHOT in allowed,
            "vm_actions": [
                (name, action, can_operate and vm.status in ACTIONS[VM_ACTION_STATES[name]][0])
                for name, action in PORTAL_ACTIONS.items()
            ],
            # live.js enables each button from the VM's new status.
            "vm_action_states": {name: sorted(ACTIONS[VM_ACTION_STATES[name]][0]) for name in PORTAL_ACTIONS},
            "console_url": console_url(vm),
            "snapshots": list(Snapshot.objects.filter(vm=vm).order_by("created_at")),
            "snapshot_form": SnapshotForm(),
        }
        return render(request, "vm_portal/vm_detail.html", context)


class VmActionView(VmPortalMixin, View):
    """Run, shut down, power off, reboot: POST calls the service (`vm.operate` checked);
    GET asks first for the destructive ones."""

    def get_action(self) -> Action:
        action = PORTAL_ACTIONS.get(self.kwargs["action"])
        if action is None:
            raise Http404("No such action.")
        return action

    def get(self, request, pk, action):
        act = self.get_action()
        vm = users_vm(request, pk)
        check(request.user, ActionGroup.VM_OPERATE, vm)
        if not act.confirm:
            return HttpResponseNotAllowed(["POST"])
        return confirm_page(request, act, act.question.format(obj=vm.name), act.detail, vm)

    def post(self, request, pk, action):
        act = self.get_action()
        vm = users_vm(request, pk)
        check(request.user, ActionGroup.VM_OPERATE, vm)
        try:
            job = act.service(vm, user=request.user)
        except (ConflictError, ValidationError) as exc:
            messages.error(request, error_text(exc))
        else:
            job_started(request, job, f"{act.label}: {vm.name}.")
        return redirect("vm_portal:vm-detail", pk=vm.pk)


def confirm_page(request, act: Action, question: str, detail: str, vm):
    return render(
        request,
        "vm_portal/confirm.html",
        {
            "title": act.label,
            "question": question,
            "detail": detail,
            "confirm_label": act.label,
            "danger": act.danger,
            "cancel_url": reverse("vm_portal:vm-detail", args=[vm.pk]),
        },
    )


# Snapshots --------------------------------------------------------------------------------


class SnapshotCreateView(VmPortalMixin, View):
    def post(self, request, pk):
        vm = users_vm(request, pk)
        check(request.user, ActionGroup.VM_SNAPSHOT, vm)
        form = SnapshotForm(request.POST)
        if not form.is_valid():
            messages.error(request, "A snapshot needs a description.")
        else:
            try:
                _, job = compute_services.create_snapshot(vm, user=request.user, **form.cleaned_data)
            except (ConflictError, ValidationError) as exc:
                messages.error(request, error_text(exc))
            else:
                job_started(request, job, f"Snapshot of VM {vm.name} requested.")
        return redirect("vm_portal:vm-detail", pk=vm.pk)


class SnapshotActionView(VmPortalMixin, View):
    """Revert to or delete a snapshot: GET asks, POST calls the service (`vm.snapshot` checked)."""

    def get_target(self, request, vm_pk, pk, action):
        act = SNAPSHOT_ACTIONS.get(action)
        if act is None:
            raise Http404("No such action.")
        vm = users_vm(request, vm_pk)
        check(request.user, ActionGroup.VM_SNAPSHOT, vm)
        snapshot = Snapshot.objects.filter(vm=vm, pk=pk).first()
        if snapshot is None:
            raise Http404("No such snapshot.")
        return act, vm, snapshot

    def get(self, request, vm_pk, pk, action):
        act, vm, snapshot = self.get_target(request, vm_pk, pk, action)
        names = {"vm": vm.name, "obj": snapshot.description}
        return confirm_page(request, act, act.question.format(**names), act.detail, vm)

    def post(self, request, vm_pk, pk, action):
        act, vm, snapshot = self.get_target(request, vm_pk, pk, action)
        try:
            job = act.service(snapshot, user=request.user)
        except (ConflictError, ValidationError) as exc:
            messages.error(request, error_text(exc))
        else:
            job_started(request, job, f"{act.label}: snapshot '{snapshot.description}' of VM {vm.name}.")
        return redirect("vm_portal:vm-detail", pk=vm.pk)


# New VM -----------------------------------------------------------------------------------


class VmCreateView(VmPortalMixin, View):
    """A VM of one's own from a template one may use, showing what is left of the quota;
    a refusal (no permission, quota) is shown on the form, saying why."""

    def get(self, request):
        return self.render(OwnVmForm(user=request.user, initial={"template": request.GET.get("template")}))

    def post(self, request):
        form = OwnVmForm(request.POST, user=request.user)
        if not form.is_valid():
            return self.render(form)
        try:
            vm, job = compute_services.create_own_vm(user=request.user, **form.service_kwargs())
        except ValidationError as exc:
            form.add_service_errors(exc)
            return self.render(form)
        except (ConflictError, PermissionDenied) as exc:
            form.add_error(None, error_text(exc) if isinstance(exc, ConflictError) else str(exc))
            return self.render(form)
        job_started(request, job, f"VM {vm.name} was created.")
        return redirect("vm_portal:vm-detail", pk=vm.pk)

    def render(self, form):
        return render(
            self.request,
            "vm_portal/vm_form.html",
            {"title": "New virtual machine", "form": form, "quota": quota_rows(self.request.user)},
        )
