from django.apps import AppConfig


class HostagentConfig(AppConfig):
    name = "hostagent"
