from django.db import models


class NicInterface(models.TextChoices):
    VIRTIO = "virtio", "VirtIO"
    E1000 = "e1000", "e1000"
    RTL8139 = "rtl8139", "rtl8139"
