"""Monitoring history: samples of hosts and VMs (CPU, memory, network), host NICs and storage
domains, kept at full resolution for an hour and as 5-minute averages for 30 days.

Writing. The ingest handler calls `record_samples(host_sample, vm_samples)` for every stats
message an agent pushes (docs/ingest.md). It turns counters into rates against the previous
sample of the same object (kept in this process: a VM's CPU time in ns into a percentage of
its vCPUs, NIC byte counters into bytes/s), writes the results into the sample dicts
(`cpu_pct`, `mem_pct`, `net_rx_bps`, `net_tx_bps`, and `rx_bps`/`tx_bps` on each host NIC), so
the hot cache and the websocket message that follow carry them, and buffers one row per
object. The buffer is written at most every `OLVM_HISTORY_FLUSH_SECONDS` per process by a
writer thread, in one COPY on PostgreSQL (bulk_create elsewhere): the ingest handler never
waits for the database, and thirteen thousand VM samples a second cost it a few
microseconds each (about what encoding the sample as JSON costs).

Pruning. `compact()` (the beat's `history_retention_task`, every 5 minutes) replaces the
samples older than an hour by their 5-minute averages, one INSERT ... SELECT and one DELETE
per table, and deletes averages older than 30 days.

Reading. `series()` answers the API's `/hosts/<id>/history/` and `/vms/<id>/history/`.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import math
import os
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Avg, BigIntegerField, DateTimeField, FloatField, Func, Max
from django.db.models.functions import Cast
from django.utils import timezone

from .choices import SampleResolution
from .models import HostNicSample, HostSample, StorageDomainSample, VmSample

log = logging.getLogger(__name__)

RAW_KEEP = dt.timedelta(hours=1)
AVERAGE_KEEP = dt.timedelta(days=30)
BUCKET_SECONDS = SampleResolution.FIVE_MINUTES.value
STATE_TTL = 900.0  # seconds: counters of an object not heard from for this long are forgotten
MAX_BUFFERED_ROWS = 2_000_000  # beyond this (a database far behind) new samples are dropped
# VM statuses whose samples are kept: a defined but stopped domain reports zeros.
RUNNING_STATUSES = {"up", "paused", "powering_down", "migrating"}


def _flush_seconds() -> float:
    return float(getattr(settings, "OLVM_HISTORY_FLUSH_SECONDS", 10.0))


# Rates from counters ---------------------------------------------------------------------


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _pct(part, whole) -> float | None:
    part, whole = _number(part), _number(whole)
    if part is None or not whole or whole <= 0:
        return None
    return round(max(0.0, min(100.0, 100.0 * part / whole)), 2)


def _rate(now: float, value, before: tuple | None, index: int) -> float | None:
    """Bytes (or ns) per second between the previous counter `before[index]` and `value`;
    None when there is no previous sample, time did not move or the counter went back (reset)."""
    if before is None or value is None or before[index] is None:
        return None
    elapsed = now - before[0]
    delta = value - before[index]
    if elapsed <= 0 or delta < 0:
        return None
    return delta / elapsed


def host_usage(sample: dict) -> tuple[float | None, float | None]:
    """(CPU %, memory %) of a host sample (host_stats: busy = user + system, used / total)."""
    cpu = sample.get("cpu")
    cpu_pct = None
    if isinstance(cpu, dict):
        user, system = _number(cpu.get("user_pct")), _number(cpu.get("system_pct"))
        idle = _number(cpu.get("idle_pct"))
        if user is not None or system is not None:
            cpu_pct = round(max(0.0, min(100.0, (user or 0.0) + (system or 0.0))), 2)
        elif idle is not None:
            cpu_pct = round(max(0.0, min(100.0, 100.0 - idle)), 2)
    memory = sample.get("memory")
    mem_pct = _pct(memory.get("used_mib"), memory.get("total_mib")) if isinstance(memory, dict) else None
    return cpu_pct, mem_pct


def _nic_totals(nics) -> tuple[float | None, float | None]:
    """Received and sent bytes of all the NICs of a sample (None when none reports a counter)."""
    rx = tx = None
    if type(nics) is not list:
        return rx, tx
    for nic in nics:
        if type(nic) is not dict:
            continue
        r, t = nic.get("rx_bytes"), nic.get("tx_bytes")
        if type(r) is not int:
            r = _number(r)
        if type(t) is not int:
            t = _number(t)
        if r is not None:
            rx = (rx or 0) + r
        if t is not None:
            tx = (tx or 0) + t
    return rx, tx


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


# The recorder ---------------------------------------------------------------------------


@dataclass
class _Rows:
    hosts: list
    vms: list
    nics: list

    def __len__(self) -> int:
        return len(self.hosts) + len(self.vms) + len(self.nics)


class _Recorder:
    """Counters of the previous sample of each object, and the rows waiting to be written."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        # ("vm", id) -> (at, cpu_ns, rx, tx); ("nic", host id, name) -> (at, rx, tx)
        self.previous: dict[tuple, tuple] = {}
        self.rows = _Rows([], [], [])
        self.last_flush = time.monotonic()
        self.dropped = 0
        self.due = threading.Event()
        self.writer: threading.Thread | None = None

    def wake_writer(self) -> None:
        """Have the writer thread write the buffer (started on first use)."""
        with self.lock:
            if self.writer is None:
                self.writer = threading.Thread(target=self._write_when_due, name="olvm-history", daemon=True)
                self.writer.start()
        self.due.set()

    def _write_when_due(self) -> None:
        from django.db import connection as thread_connection

        while True:
            self.due.wait()
            self.due.clear()
            try:
                flush()
            except Exception:  # never let the writer die: the next batch tries again
                log.exception("monitoring history: write failed")
            finally:
                thread_connection.close()  # this thread's own connection; reopened next time

    def record(self, host_sample: dict, vm_samples: list[dict]) -> bool:
        """Annotate the samples and buffer their rows; True when the buffer is due for writing."""
        at = _number(host_sample.get("at"))
        host_id = host_sample.get("id")
        if at is None or not host_id:
            return False
        when = dt.datetime.fromtimestamp(at, dt.UTC)
        cpu_pct, mem_pct = host_usage(host_sample)
        host_sample["cpu_pct"], host_sample["mem_pct"] = cpu_pct, mem_pct
        vm_rows, nic_rows = [], []
        with self.lock:
            previous = self.previous
            # Host NICs (when the agent reports their counters): per NIC, and in total but for bridges.
            nics = host_sample.get("nics")
            host_rx = host_tx = None
            for nic in nics if isinstance(nics, list) else ():
                if not isinstance(nic, dict) or not nic.get("name"):
                    continue
                key = ("nic", host_id, str(nic["name"])[:64])
                rx, tx = _number(nic.get("rx_bytes")), _number(nic.get("tx_bytes"))
                before = previous.get(key)
                previous[key] = (at, rx, tx)
                rx_bps, tx_bps = _round(_rate(at, rx, before, 1)), _round(_rate(at, tx, before, 2))
                nic["rx_bps"], nic["tx_bps"] = rx_bps, tx_bps
                if before is not None:
                    nic_rows.append((host_id, key[2], when, rx_bps, tx_bps))
                if nic.get("bridge") is True:
                    continue  # what a bridge carries also crosses its ports: not counted twice in the total
                if rx_bps is not None:
                    host_rx = (host_rx or 0.0) + rx_bps
                if tx_bps is not None:
                    host_tx = (host_tx or 0.0) + tx_bps
            host_sample["net_rx_bps"], host_sample["net_tx_bps"] = _round(host_rx), _round(host_tx)
            # VMs: CPU time against the vCPUs' capacity, memory held on the host, traffic of all vNICs.
            get_previous = previous.get
            for sample in vm_samples:  # the hot loop (thousands a second): plain arithmetic inline
                vm_id = sample.get("id") or sample.get("vm_id")
                status = sample.get("status")
                key = ("vm", vm_id)
                if not vm_id or (status is not None and status not in RUNNING_STATUSES):
                    previous.pop(key, None)
                    continue
                cpu_ns = sample.get("cpu_time_ns")
                if type(cpu_ns) is not int:
                    cpu_ns = _number(cpu_ns)
                rx, tx = _nic_totals(sample.get("nics"))
                before = get_previous(key)
                previous[key] = (at, cpu_ns, rx, tx)
                cpu = net_rx = net_tx = None
                if before is not None and at > before[0]:
                    elapsed = at - before[0]
                    if cpu_ns is not None and before[1] is not None and cpu_ns >= before[1]:
                        vcpus = sample.get("vcpus")
                        vcpus = vcpus if type(vcpus) is int and vcpus > 0 else (_number(vcpus) or 1.0)
                        cpu = round(min(100.0, (cpu_ns - before[1]) / (elapsed * 1e7 * vcpus)), 2)
                    if rx is not None and before[2] is not None and rx >= before[2]:
                        net_rx = round((rx - before[2]) / elapsed, 1)
                    if tx is not None and before[3] is not None and tx >= before[3]:
                        net_tx = round((tx - before[3]) / elapsed, 1)
                mem = _pct(sample.get("rss_kib") or sample.get("balloon_kib"), sample.get("memory_kib"))
                sample["cpu_pct"], sample["mem_pct"] = cpu, mem
                sample["net_rx_bps"], sample["net_tx_bps"] = net_rx, net_tx
                vm_rows.append((vm_id, when, cpu, mem, net_rx, net_tx))
            rows = self.rows
            if len(rows) + len(vm_rows) + len(nic_rows) + 1 > MAX_BUFFERED_ROWS:
                self.dropped += len(vm_rows) + len(nic_rows) + 1
                return False
            rows.hosts.append((host_id, when, cpu_pct, mem_pct, host_sample["net_rx_bps"], host_sample["net_tx_bps"]))
            rows.vms.extend(vm_rows)
            rows.nics.extend(nic_rows)
            return time.monotonic() - self.last_flush >= _flush_seconds()

    def take(self) -> _Rows:
        """The buffered rows (the buffer starts again empty); forget long-silent objects."""
        with self.lock:
            rows, self.rows = self.rows, _Rows([], [], [])
            self.last_flush = time.monotonic()
            dropped, self.dropped = self.dropped, 0
            horizon = time.time() - STATE_TTL
            stale = [key for key, value in self.previous.items() if value[0] < horizon]
            for key in stale:
                del self.previous[key]
        if dropped:
            log.warning("monitoring history: %d samples dropped (the database is not keeping up)", dropped)
        return rows


_recorder: _Recorder | None = None
_recorder_lock = threading.Lock()


def _get() -> _Recorder:
    global _recorder
    with _recorder_lock:
        if _recorder is None or _recorder.pid != os.getpid():
            _recorder = _Recorder()
        return _recorder


def record_samples(host_sample: dict, vm_samples: list[dict]) -> None:
    """One stats message of a host (docs/ingest.md), as the ingest handler builds it:
    `host_sample` = {"id": host id, "at": epoch seconds, ...host_stats...}, `vm_samples` =
    [{"id": VM id, "at": ..., ...vm_stats...}]. Adds the derived figures to the dicts in place
    (`cpu_pct`, `mem_pct`, `net_rx_bps`, `net_tx_bps`; None until a second sample gives a
    rate), buffers the history rows, and when `OLVM_HISTORY_FLUSH_SECONDS` have passed since
    the last write wakes this process's writer thread: the caller never waits for the
    database. Never raises."""
    try:
        recorder = _get()
        if recorder.record(host_sample, vm_samples):
            recorder.wake_writer()
    except Exception:  # history is best effort: never cost the caller its message
        log.exception("monitoring history: samples of host %s not recorded", host_sample.get("id"))


def forget() -> None:
    """Drop this process's counters and buffered rows (tests)."""
    global _recorder
    with _recorder_lock:
        _recorder = None


def flush() -> int:
    """Write the buffered rows now, in the calling thread (the writer thread, tests, exit);
    returns how many were written (0 when the database refused them: they are dropped)."""
    recorder = _recorder
    if recorder is None or recorder.pid != os.getpid():
        return 0
    rows = recorder.take()
    if not len(rows):
        return 0
    try:
        with transaction.atomic():
            _write(HostSample, ("host_id", "time", "cpu_pct", "mem_pct", "net_rx_bps", "net_tx_bps"), rows.hosts)
            _write(VmSample, ("vm_id", "time", "cpu_pct", "mem_pct", "net_rx_bps", "net_tx_bps"), rows.vms)
            _write(HostNicSample, ("host_id", "name", "time", "rx_bps", "tx_bps"), rows.nics)
    except DatabaseError as exc:
        log.warning("monitoring history: %d rows not written: %s", len(rows), exc)
        return 0
    return len(rows)


def _write(model, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Rows of `columns` (plus resolution RAW): one COPY on PostgreSQL, its text written here
    (a few times cheaper than psycopg's per-row adaptation; the samples of one message share
    their time), bulk_create elsewhere."""
    if not rows:
        return
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(model._meta.db_table)
        names = ", ".join(connection.ops.quote_name(model._meta.get_field(c).column) for c in (*columns, "resolution"))
        tail = f"\t{SampleResolution.RAW.value}\n"
        times: dict = {}
        lines = []
        for row in rows:
            fields = []
            for value in row:
                if value is None:
                    fields.append("\\N")
                elif type(value) is float:
                    fields.append(repr(value))
                elif isinstance(value, dt.datetime):
                    text = times.get(value)
                    if text is None:
                        text = times[value] = value.isoformat()
                    fields.append(text)
                else:
                    fields.append(_copy_text(str(value)))
            lines.append("\t".join(fields) + tail)
        with connection.cursor() as cursor, cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            copy.write("".join(lines).encode())
        return
    model.objects.bulk_create([model(**dict(zip(columns, row, strict=True))) for row in rows], batch_size=2000)


def _copy_text(text: str) -> str:
    """A value in COPY's text format: backslash, tab and line breaks escaped."""
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text


def _flush_at_exit() -> None:
    try:
        flush()
    except Exception as exc:  # the process is ending: say what was lost, never hang or raise here
        log.warning("monitoring history: buffered samples lost at exit: %s", exc)


atexit.register(_flush_at_exit)


def record_storage_domains(readings: list[tuple], *, at: dt.datetime | None = None) -> None:
    """(storage domain id, total bytes, free bytes) readings of a monitoring run: written at once."""
    when = at or timezone.now()
    StorageDomainSample.objects.bulk_create(
        [StorageDomainSample(storage_domain_id=sd, time=when, total_bytes=t, free_bytes=f) for sd, t, f in readings]
    )


# Downsampling and retention -------------------------------------------------------------


class TimeBucket(Func):
    """The start of the `seconds`-long bucket a datetime falls in (UTC epoch buckets)."""

    output_field = DateTimeField()

    def __init__(self, expression, seconds: int = BUCKET_SECONDS):
        super().__init__(expression)
        self.seconds = int(seconds)

    def as_sql(self, compiler, connection, **extra):  # pragma: no cover - PostgreSQL and SQLite below
        raise NotImplementedError(f"TimeBucket has no SQL for {connection.vendor}")

    def as_postgresql(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        return f"to_timestamp(floor(extract(epoch from {sql}) / {self.seconds}) * {self.seconds})", params

    def as_sqlite(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        # '%%' is a literal '%' once Django's SQLite cursor has turned '%s' placeholders into '?'.
        epoch = f"CAST(strftime('%%s', {sql}) AS INTEGER)"
        return f"strftime('%%Y-%%m-%%d %%H:%%M:%%S', ({epoch} / {self.seconds}) * {self.seconds}, 'unixepoch')", params


@dataclass(frozen=True)
class SeriesSpec:
    model: type
    keys: tuple[str, ...]  # what identifies the object (and the NIC)
    values: tuple[str, ...]  # the averaged columns


SERIES_SPECS = (
    SeriesSpec(HostSample, ("host_id",), ("cpu_pct", "mem_pct", "net_rx_bps", "net_tx_bps")),
    SeriesSpec(VmSample, ("vm_id",), ("cpu_pct", "mem_pct", "net_rx_bps", "net_tx_bps")),
    SeriesSpec(HostNicSample, ("host_id", "name"), ("rx_bps", "tx_bps")),
    SeriesSpec(StorageDomainSample, ("storage_domain_id",), ("total_bytes", "free_bytes")),
)


def bucket_start(moment: dt.datetime) -> dt.datetime:
    epoch = int(moment.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % BUCKET_SECONDS, dt.UTC)


def compact(now: dt.datetime | None = None) -> dict[str, int]:
    """Samples older than an hour become 5-minute averages (whole buckets only); averages
    older than 30 days are deleted. Returns rows averaged away and deleted per model."""
    now = now or timezone.now()
    cutoff = bucket_start(now - RAW_KEEP)
    oldest = now - AVERAGE_KEEP
    done = {}
    for spec in SERIES_SPECS:
        model = spec.model
        with transaction.atomic():
            # Only rows already there: a late sample committed meanwhile waits for the next run.
            last_id = model.objects.aggregate(last=Max("id"))["last"]
            raw = model.objects.filter(resolution=SampleResolution.RAW, time__lt=cutoff, id__lte=last_id or 0)
            averaged = _insert_averages(spec, raw)
            removed, _ = raw.delete() if averaged else (0, None)
            expired, _ = model.objects.filter(time__lt=oldest).delete()
        done[model.__name__] = removed + expired
    return done


def _insert_averages(spec: SeriesSpec, raw) -> int:
    """INSERT the 5-minute averages of the rows of `raw` (one statement); how many buckets."""
    model = spec.model
    averages = {}
    for name in spec.values:
        field = model._meta.get_field(name)
        average = Avg(name, output_field=FloatField())
        averages[f"avg_{name}"] = Cast(average, BigIntegerField()) if isinstance(field, BigIntegerField) else average
    grouped = raw.order_by().values(*spec.keys, bucket=TimeBucket("time")).annotate(**averages)
    select, params = grouped.query.sql_with_params()
    quote = connection.ops.quote_name
    columns = [*spec.keys, "time", *spec.values, "resolution"]
    picked = [*spec.keys, "bucket", *(f"avg_{name}" for name in spec.values)]
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(c) for c in columns)}) "
        f"SELECT {', '.join(quote(c) for c in picked)}, {SampleResolution.FIVE_MINUTES.value} FROM ({select}) averages"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


# Reading --------------------------------------------------------------------------------

# API metric name -> (column, unit), per kind of object.
USAGE_METRICS = {
    "cpu": ("cpu_pct", "%"),
    "memory": ("mem_pct", "%"),
    "net_rx": ("net_rx_bps", "B/s"),
    "net_tx": ("net_tx_bps", "B/s"),
}
METRICS = {
    "host": (HostSample, "host_id", USAGE_METRICS),
    "vm": (VmSample, "vm_id", USAGE_METRICS),
    "host_nic": (HostNicSample, "host_id", {"net_rx": ("rx_bps", "B/s"), "net_tx": ("tx_bps", "B/s")}),
    "storage_domain": (
        StorageDomainSample,
        "storage_domain_id",
        {"free": ("free_bytes", "B"), "total": ("total_bytes", "B")},
    ),
}


def json_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def series(
    kind: str,
    object_id,
    metrics: list[str],
    *,
    since: dt.datetime,
    until: dt.datetime | None = None,
    nic: str | None = None,
) -> dict:
    """Points of `metrics` of one object from `since`: the samples of the last hour, 5-minute
    averages before. One query; at most ~9,400 points (30 days)."""
    model, key, known = METRICS[kind]
    columns = [known[name][0] for name in metrics]
    rows = model.objects.filter(**{key: object_id}, time__gte=since)
    if nic is not None:
        rows = rows.filter(name=nic)
    if until is not None:
        rows = rows.filter(time__lt=until)
    points = [[json_time(row[0]), *row[1:]] for row in rows.order_by("time", "id").values_list("time", *columns)]
    return {
        "id": str(object_id),
        "since": json_time(since),
        "until": json_time(until) if until is not None else None,
        "metrics": list(metrics),
        "units": {name: known[name][1] for name in metrics},
        "points": points,
    }


# The newest sample (hot cache) -------------------------------------------------------------

_hot: tuple | None = None
_hot_lock = threading.Lock()


def _hot_cache():
    global _hot
    with _hot_lock:
        if _hot is None or _hot[0] != os.getpid():
            import redis

            url = settings.CACHES["default"]["LOCATION"]
            _hot = (os.getpid(), redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5))
        return _hot[1]


def latest_samples(kind: str, ids) -> dict[str, dict]:
    """The newest stats sample of each host or VM (`kind` "host" or "vm") that the ingest
    handler keeps in the hot cache: one MGET for a page of rows. {} when Redis does not answer:
    a page then shows no figures until the next stats message."""
    import orjson

    from .ingest import STATS_KEY

    keys = [str(i) for i in ids]
    if not keys:
        return {}
    try:
        values = _hot_cache().mget([STATS_KEY.format(kind=kind, id=key) for key in keys])
    except Exception as exc:  # the hot cache is best effort
        log.warning("hot cache not read: %s", exc)
        return {}
    samples = {}
    for key, raw in zip(keys, values, strict=True):
        if raw is not None:
            try:
                samples[key] = orjson.loads(raw)
            except ValueError:
                continue
    return samples


def usage(kind: str, sample: dict | None) -> dict:
    """{cpu, memory, net_rx, net_tx} of a sample (None where unknown): the figures
    `record_samples` added, or for a host what its own sample says."""
    if not sample:
        return {"cpu": None, "memory": None, "net_rx": None, "net_tx": None}
    cpu, memory = sample.get("cpu_pct"), sample.get("mem_pct")
    if kind == "host" and cpu is None and memory is None:
        cpu, memory = host_usage(sample)
    return {"cpu": cpu, "memory": memory, "net_rx": sample.get("net_rx_bps"), "net_tx": sample.get("net_tx_bps")}
