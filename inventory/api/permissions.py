from rest_framework.permissions import BasePermission


class IsAdministrator(BasePermission):
    """The admin API is for administrators (staff); VM users get the VM portal's scoped API."""

    message = "Administrator rights are needed for this API."

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff)


class IsAdministratorOrUser(BasePermission):
    """Any signed-in active user: administrators see everything; the viewset
    (inventory.api.views.UserScopedMixin) limits everyone else to their object permissions."""

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_active)
