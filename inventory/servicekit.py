"""Small pieces every app's services use: validate-and-save, field whitelists, row locks."""

from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction

from hostagent.client import AgentClient, HostAddress, RemoteAgentClient, client_for

from .models import Host


def check_fields(model: type[models.Model], fields: dict, allowed: Iterable[str]) -> None:
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise ValidationError({name: f"'{name}' cannot be set on a {model._meta.verbose_name}." for name in unknown})


def save_validated(obj: models.Model, *, exclude: Iterable[str] = ()) -> models.Model:
    """full_clean() then save; a unique clash raced in after validation becomes a 400 too."""
    obj.full_clean(exclude=list(exclude))
    try:
        with transaction.atomic():
            obj.save()
    except IntegrityError as exc:
        raise ValidationError(
            {"__all__": f"Another {obj._meta.verbose_name} already uses one of these unique values ({exc})."}
        ) from None
    return obj


def apply_changes(obj: models.Model, changes: dict, allowed: Iterable[str]) -> list[str]:
    """Set the allowed attributes of `obj` from `changes`; return the names that changed."""
    check_fields(type(obj), changes, allowed)
    changed = []
    for name, value in changes.items():
        field = obj._meta.get_field(name)
        attname = field.attname if isinstance(field, models.ForeignKey) else name
        current = getattr(obj, attname)
        new = value.pk if isinstance(field, models.ForeignKey) and isinstance(value, models.Model) else value
        if current != new:
            setattr(obj, name, value)
            changed.append(name)
    return changed


def locked(obj: models.Model) -> models.Model:
    """Reload `obj` with its row locked for the rest of the transaction."""
    return type(obj)._default_manager.select_for_update().get(pk=obj.pk)


def agent_for(host: Host) -> AgentClient:
    """The client for the host's agent: mutual TLS with the engine's client certificate
    (issued from the engine CA on first use), or in-process for a simulated host that has
    no certificate (seed_demo's: `SimulatedAgentClient`, no agent anywhere).

    A simulated host *with* a certificate is served by a simulator process
    (`manage.py simulate`, `python -m hostagent simulate`): a real agent with the sim
    driver, reached over the network like any host."""
    address = HostAddress(
        id=str(host.pk), name=host.name, address=host.address, port=host.agent_port, simulated=host.simulated
    )
    if host.simulated and not host.cert_fingerprint:
        return client_for(address)
    from .certs import engine_client_cert

    paths = engine_client_cert()
    return RemoteAgentClient(address, cert_file=paths.cert_file, key_file=paths.key_file, ca_file=paths.ca_file)
