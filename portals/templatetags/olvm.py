"""Template helpers of the portals: status badges, sizes, progress bars, form widgets."""

from django import template
from django.utils.html import format_html

register = template.Library()

# status code -> (Bootstrap colour, bootstrap-icons name); one table for VMs, hosts,
# data centers, storage domains, disks, jobs and steps (the codes do not clash in meaning).
STATUS_STYLES: dict[str, tuple[str, str]] = {
    "up": ("success", "arrow-up-circle-fill"),
    "active": ("success", "check-circle-fill"),
    "ok": ("success", "check-circle-fill"),
    "finished": ("success", "check-circle-fill"),
    "down": ("danger", "arrow-down-circle-fill"),
    "failed": ("danger", "x-circle-fill"),
    "illegal": ("danger", "x-octagon-fill"),
    "install_failed": ("danger", "x-circle-fill"),
    "non_responsive": ("danger", "exclamation-octagon-fill"),
    "non_operational": ("danger", "exclamation-triangle-fill"),
    "not_responding": ("danger", "question-octagon-fill"),
    "problematic": ("danger", "exclamation-triangle-fill"),
    "not_operational": ("danger", "exclamation-triangle-fill"),
    "maintenance": ("warning", "wrench-adjustable-circle-fill"),
    "preparing_for_maintenance": ("warning", "hourglass-split"),
    "paused": ("warning", "pause-circle-fill"),
    "suspended": ("warning", "moon-fill"),
    "locked": ("warning", "lock-fill"),
    "image_locked": ("warning", "lock-fill"),
    "in_preview": ("warning", "eye-fill"),
    "aborted": ("secondary", "slash-circle"),
    "unknown": ("secondary", "question-circle-fill"),
    "uninitialized": ("secondary", "circle"),
    "unattached": ("secondary", "circle"),
    "inactive": ("secondary", "dash-circle-fill"),
    "pending": ("secondary", "clock"),
    "contend": ("info", "arrow-repeat"),
    "wait_for_launch": ("info", "hourglass-split"),
    "powering_up": ("info", "arrow-up-circle"),
    "powering_down": ("info", "arrow-down-circle"),
    "reboot_in_progress": ("info", "arrow-clockwise"),
    "migrating": ("info", "arrow-left-right"),
    "installing": ("info", "gear-fill"),
    "connecting": ("info", "plug-fill"),
    "started": ("info", "arrow-repeat"),
}
SEVERITY_STYLES: dict[str, tuple[str, str]] = {
    "normal": ("secondary", "info-circle"),
    "warning": ("warning", "exclamation-triangle-fill"),
    "error": ("danger", "x-circle-fill"),
    "alert": ("danger", "bell-fill"),
}


def status_badge_html(code: str, label: str | None = None) -> str:
    colour, icon = STATUS_STYLES.get(code or "", ("secondary", "circle"))
    text_class = "text-dark" if colour == "warning" else ""
    return format_html(
        '<span class="badge text-bg-{} {} olvm-status" data-status="{}"><i class="bi bi-{}"></i> {}</span>',
        colour,
        text_class,
        code,
        icon,
        label or code,
    )


def severity_icon_html(code: str) -> str:
    colour, icon = SEVERITY_STYLES.get(code or "", ("secondary", "info-circle"))
    return format_html('<i class="bi bi-{} text-{}" title="{}"></i>', icon, colour, code)


def progress_html(value: int, status: str = "started") -> str:
    colour = {"finished": "bg-success", "failed": "bg-danger", "aborted": "bg-secondary"}.get(status, "")
    animated = "progress-bar-striped progress-bar-animated" if status == "started" else ""
    return format_html(
        '<div class="progress olvm-progress" role="progressbar" aria-valuenow="{0}" aria-valuemin="0" '
        'aria-valuemax="100"><div class="progress-bar {1} {2}" style="width: {0}%">{0}%</div></div>',
        int(value or 0),
        colour,
        animated,
    )


@register.simple_tag
def status_badge(code, label=None):
    return status_badge_html(code, label)


@register.simple_tag
def severity_icon(code):
    return severity_icon_html(code)


@register.simple_tag
def progress_bar(value, status="started"):
    return progress_html(value, status)


@register.filter
def mib(value) -> str:
    """1536 -> '1.5 GiB'; sizes in MiB as the models keep them."""
    if value in (None, ""):
        return "—"
    value = int(value)
    if value >= 1024 * 1024:
        return f"{value / (1024 * 1024):.1f} TiB".replace(".0 ", " ")
    if value >= 1024:
        return f"{value / 1024:.1f} GiB".replace(".0 ", " ")
    return f"{value} MiB"


@register.filter
def gib(value) -> str:
    """Bytes -> '12.5 GiB' (binary units, as oVirt shows them)."""
    if value in (None, ""):
        return "—"
    value = int(value)
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    number = float(value)
    unit = 0
    while number >= 1024 and unit < len(units) - 1:
        number /= 1024
        unit += 1
    text = f"{number:.1f}".rstrip("0").rstrip(".") if unit else str(value)
    return f"{text} {units[unit]}"


@register.filter
def percent(part, whole) -> int:
    try:
        return max(0, round(100 * float(part) / float(whole)))
    except (TypeError, ValueError, ZeroDivisionError):
        return 0


@register.filter
def yesno_icon(value) -> str:
    if value:
        return format_html('<i class="bi bi-check-lg text-success" title="{}"></i>', "yes")
    return format_html('<span class="text-body-tertiary" title="{}">—</span>', "no")


@register.filter
def widget_type(bound_field) -> str:
    return bound_field.field.widget.__class__.__name__


@register.simple_tag(takes_context=True)
def querystring_replace(context, **kwargs) -> str:
    """The current query string with some parameters replaced (None removes them)."""
    query = context["request"].GET.copy()
    for key, value in kwargs.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return "?" + query.urlencode() if query else "?"


@register.filter
def has_url_name(items, url_name) -> bool:
    """True when one of the navigation `items` (label, URL name, icon) is `url_name`."""
    return any(item[1] == url_name for item in items)


@register.filter
def status_colour(code) -> str:
    return STATUS_STYLES.get(code or "", ("secondary", "circle"))[0]


@register.filter
def invalid_aware(bound_field):
    """Render a form field's widget, marked is-invalid when the field has errors."""
    if not bound_field.errors:
        return bound_field.as_widget()
    css = bound_field.field.widget.attrs.get("class", "")
    return bound_field.as_widget(attrs={"class": f"{css} is-invalid".strip()})


@register.filter
def table_cells(row):
    """(`td` attributes as HTML, rendered cell) of a table row, for portals/inc/table.html.

    The attributes of a column are computed on its first cell and kept on the table: the
    portal's tables give static `td` attributes, and django-tables2 rebuilds them per cell.
    """
    table = row.table
    known = table.__dict__.setdefault("_olvm_td_attrs", {})
    for column, cell in row.items():
        attrs = known.get(column.name)
        if attrs is None:
            attrs = known[column.name] = column.attrs["td"].as_html()
        yield attrs, cell


# Monitoring figures (the same text as static/olvm/live.js writes) ---------------------------


def percent_text(value) -> str:
    if value is None:
        return "—"
    value = float(value)
    return f"{value:.1f} %" if value < 10 else f"{value:.0f} %"


def rate_text(value) -> str:
    """Bytes per second for people: 512 B/s, 1.5 KiB/s, 12 MiB/s."""
    if value is None:
        return "—"
    number, unit = float(value), 0
    units = ["B/s", "KiB/s", "MiB/s", "GiB/s"]
    while number >= 1024 and unit < len(units) - 1:
        number /= 1024
        unit += 1
    text = f"{number:.0f}" if unit == 0 or number >= 100 else f"{number:.1f}"
    return f"{text} {units[unit]}"


def stat_html(stat: str, usage: dict) -> str:
    """The cell of a live figure: `cpu`, `memory` (percent) or `net` (received / sent)."""
    if stat == "net":
        if usage.get("net_rx") is None and usage.get("net_tx") is None:
            return "—"
        return format_html(
            '<i class="bi bi-arrow-down-short"></i>{} <i class="bi bi-arrow-up-short"></i>{}',
            rate_text(usage.get("net_rx")),
            rate_text(usage.get("net_tx")),
        )
    return percent_text(usage.get(stat))


@register.simple_tag
def live_stat(stat, usage):
    return stat_html(stat, usage or {})
