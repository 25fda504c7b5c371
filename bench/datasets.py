"""Deterministic benchmark datasets built from the shared EVTX corpora (cached under bench/data/).

Two lanes, each written as Parquet and NDJSON with the same flattened columns a scan produces:

* ``attack``: every event of the 277 EVTX attack samples and the SigmaHQ regression ``.evtx`` files,
  repeated as they are (in file order, cycling) up to the row count. Many rules fire.
* ``realistic``: a Windows host's channel mix (mostly Security logons/process creation and Sysmon),
  built from real events of those kinds whose content strings (process names, command lines, files,
  registry keys, domains, scripts, users, hashes, ...) are replaced with benign values drawn from a
  fixed vocabulary; ``ATTACK_FRACTION`` of the rows are original attack events left untouched, tuned
  so that about 0.1 % of the events match a rule. Fields are never dropped, only their values change.

The EVTX lane is the original ``.evtx`` files themselves, listed repeatedly until they hold at least
the row count (there is no EVTX writer, so it exists for the attack lane only).

Everything is seeded; a dataset's file name carries a key of its parameters and of the flattening
code, so a cached file is reused only when it would be rebuilt identically.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = PROJECT.parent / "shared"
DEFAULT_DATA_DIR = PROJECT / "bench" / "data"

#: Bump when the generation below changes in a way that changes the produced rows.
DATASET_VERSION = 3
DEFAULT_SEED = 20240401
#: Share of realistic-lane rows that are original attack events. Tuned with the engine: 19.2 % of the
#: source events match a rule and 0.017 % of the perturbed ones do, so 0.43 % gives ~0.1 % matching.
ATTACK_FRACTION = 0.0043
ROW_GROUP_SIZE = 65_536
LANES = ("attack", "realistic")

RESERVED = ("__source", "__event_index")
SYSMON = "Microsoft-Windows-Sysmon/Operational"
POWERSHELL = "Microsoft-Windows-PowerShell/Operational"

#: (Channel, EventID) -> share of a typical Windows workstation's events (normalised below).
#: Logoffs (4634) are kept rare on purpose: SigmaHQ's informational rule win_security_user_logoff
#: matches every 4634, so their real share (~10 %) alone would put the match rate far above 0.1 %.
REALISTIC_MIX: dict[tuple[str, int], float] = {
    ("Security", 4624): 0.13,
    ("Security", 4625): 0.01,
    ("Security", 4634): 0.0002,
    ("Security", 4672): 0.07,
    ("Security", 4688): 0.08,
    (SYSMON, 1): 0.05,
    (SYSMON, 3): 0.10,
    (SYSMON, 5): 0.04,
    (SYSMON, 7): 0.15,
    (SYSMON, 10): 0.05,
    (SYSMON, 11): 0.06,
    (SYSMON, 12): 0.04,
    (SYSMON, 13): 0.06,
    (SYSMON, 22): 0.03,
    ("System", 7036): 0.02,
    (POWERSHELL, 4104): 0.02,
}


def shared_paths(shared: Path) -> tuple[Path, Path]:
    """The EVTX attack samples and the SigmaHQ regression data under ``shared``."""
    return shared / "data" / "evtx-attack-samples", shared / "sigma" / "regression_data"


def evtx_files(shared: Path) -> list[Path]:
    """Every source ``.evtx`` file, in a fixed order."""
    files: list[Path] = []
    for root in shared_paths(shared):
        if not root.exists():
            raise FileNotFoundError(f"{root} not found (the benchmark needs ../shared)")
        files.extend(sorted(root.rglob("*.evtx")))
    return files


# ---------------------------------------------------------------- flattening


def flatten_impl_key() -> str:
    """A hash of sigma_arrow.flatten's source: part of every dataset key, so new flattening rebuilds."""
    from sigma_arrow import flatten

    return "sigma_arrow.flatten:" + hashlib.sha1(inspect.getsource(flatten).encode()).hexdigest()[:8]


def events_to_table(events: list[dict[str, Any]]) -> pa.Table:
    """EVTX JSON records -> the event columns a scan produces (sigma_arrow.flatten, reserved dropped)."""
    from sigma_arrow.flatten import records_to_batch

    batch = records_to_batch(events, source="bench", first_index=0)
    keep = [name for name in batch.schema.names if name not in RESERVED]
    return pa.Table.from_batches([batch]).select(keep)


# ---------------------------------------------------------------- base events


@dataclass
class BaseEvents:
    """All source events, flattened, with their channel and event id for sampling."""

    table: pa.Table
    channel: np.ndarray
    event_id: np.ndarray
    files: list[Path]


def load_base(shared: Path) -> BaseEvents:
    """Read every source EVTX record (file order, record order) into one flattened table."""
    import evtx  # the Rust parser; DESIGN §5

    files = evtx_files(shared)
    events: list[dict[str, Any]] = []
    for path in files:
        for record in evtx.PyEvtxParser(str(path)).records_json():
            events.append(orjson.loads(record["data"]))
    table = events_to_table(events)
    channel = np.array(table.column("Channel").to_pylist(), dtype=object)
    event_id = np.array([_int_or(v, -1) for v in table.column("EventID").to_pylist()], dtype=np.int64)
    return BaseEvents(table=table, channel=channel, event_id=event_id, files=files)


def _int_or(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


# ---------------------------------------------------------------- benign vocabulary

USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy")
HOSTS = ("WS-0142.corp.example.com", "WS-0217.corp.example.com", "WS-0388.corp.example.com")
DOMAIN = "CORP"

#: (image path, original file name, description, product, company, command line templates);
#: in templates {n} is a number, {u} a user, {h} hex digits.
PROCESSES: tuple[tuple[str, str, str, str, str, tuple[str, ...]], ...] = (
    (
        r"C:\Program Files\Google\Chrome\Application\chrome.exe",
        "chrome.exe",
        "Google Chrome",
        "Google Chrome",
        "Google LLC",
        (
            '"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe" --type=renderer '
            "--renderer-client-id={n} --field-trial-handle={h}",
            '"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe" --type=gpu-process '
            "--gpu-preferences={h} --mojo-platform-channel-handle={n}",
        ),
    ),
    (
        r"C:\Program Files\Microsoft Office\root\Office16\WINWORD.EXE",
        "WinWord.exe",
        "Microsoft Word",
        "Microsoft Office",
        "Microsoft Corporation",
        (
            '"C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE" /n '
            '"C:\\Users\\{u}\\Documents\\Report_{n}.docx"',
        ),
    ),
    (
        r"C:\Program Files\Microsoft Office\root\Office16\EXCEL.EXE",
        "Excel.exe",
        "Microsoft Excel",
        "Microsoft Office",
        "Microsoft Corporation",
        (
            '"C:\\Program Files\\Microsoft Office\\root\\Office16\\EXCEL.EXE" '
            '"C:\\Users\\{u}\\Documents\\Budget_{n}.xlsx"',
        ),
    ),
    (
        r"C:\Program Files\Mozilla Firefox\firefox.exe",
        "firefox.exe",
        "Firefox",
        "Firefox",
        "Mozilla Corporation",
        ('"C:\\Program Files\\Mozilla Firefox\\firefox.exe" -contentproc -childID {n} -isForBrowser',),
    ),
    (
        r"C:\Windows\System32\notepad.exe",
        "NOTEPAD.EXE",
        "Notepad",
        "Microsoft® Windows® Operating System",
        "Microsoft Corporation",
        ('"C:\\Windows\\System32\\notepad.exe" C:\\Users\\{u}\\Documents\\notes_{n}.txt',),
    ),
    (
        r"C:\Windows\System32\RuntimeBroker.exe",
        "RuntimeBroker.exe",
        "Runtime Broker",
        "Microsoft® Windows® Operating System",
        "Microsoft Corporation",
        ("C:\\Windows\\System32\\RuntimeBroker.exe -Embedding",),
    ),
    (
        r"C:\Windows\System32\backgroundTaskHost.exe",
        "backgroundTaskHost.exe",
        "Background Task Host",
        "Microsoft® Windows® Operating System",
        "Microsoft Corporation",
        ('"C:\\Windows\\system32\\backgroundTaskHost.exe" -ServerName:App.AppX{h}.mca',),
    ),
    (
        r"C:\Windows\System32\SearchProtocolHost.exe",
        "SearchProtocolHost.exe",
        "Microsoft Windows Search Protocol Host",
        "Windows® Search",
        "Microsoft Corporation",
        ('"C:\\Windows\\system32\\SearchProtocolHost.exe" Global\\UsGthrFltPipeMssGthrPipe{n}',),
    ),
    (
        r"C:\Program Files\Microsoft VS Code\Code.exe",
        "electron.exe",
        "Visual Studio Code",
        "Visual Studio Code",
        "Microsoft Corporation",
        (
            '"C:\\Program Files\\Microsoft VS Code\\Code.exe" --type=utility '
            "--utility-sub-type=node.mojom.NodeService --field-trial-handle={h}",
        ),
    ),
    (
        r"C:\Program Files\Microsoft OneDrive\OneDrive.exe",
        "OneDrive.exe",
        "Microsoft OneDrive",
        "Microsoft OneDrive",
        "Microsoft Corporation",
        ('"C:\\Program Files\\Microsoft OneDrive\\OneDrive.exe" /background /session {n}',),
    ),
    (
        r"C:\Program Files\Zoom\bin\Zoom.exe",
        "Zoom.exe",
        "Zoom Meetings",
        "Zoom Meetings",
        "Zoom Video Communications, Inc.",
        ('"C:\\Program Files\\Zoom\\bin\\Zoom.exe" --meeting {n}',),
    ),
    (
        r"C:\Program Files\Slack\slack.exe",
        "slack.exe",
        "Slack",
        "Slack",
        "Slack Technologies, Inc.",
        ('"C:\\Program Files\\Slack\\slack.exe" --type=renderer --app-path=app-{n}',),
    ),
    (
        r"C:\Windows\System32\taskhostw.exe",
        "taskhostw.exe",
        "Host Process for Windows Tasks",
        "Microsoft® Windows® Operating System",
        "Microsoft Corporation",
        ("taskhostw.exe {{{h}}}",),
    ),
    (
        r"C:\Program Files\Adobe\Acrobat DC\Acrobat\Acrobat.exe",
        "Acrobat.exe",
        "Adobe Acrobat",
        "Adobe Acrobat",
        "Adobe Systems Incorporated",
        (
            '"C:\\Program Files\\Adobe\\Acrobat DC\\Acrobat\\Acrobat.exe" '
            '"C:\\Users\\{u}\\Documents\\Invoice_{n}.pdf"',
        ),
    ),
)
#: Processes that make network connections in the realistic lane (indices into PROCESSES).
NETWORK_PROCESSES = (0, 3, 8, 9, 10, 11)
#: Parents of user processes: Explorer (svchost/userinit parents trip Office-COM and userinit rules).
PARENTS: tuple[tuple[str, str], ...] = ((r"C:\Windows\explorer.exe", r"C:\Windows\Explorer.EXE"),)
DLLS = (
    r"C:\Windows\System32\kernel32.dll",
    r"C:\Windows\System32\user32.dll",
    r"C:\Windows\System32\combase.dll",
    r"C:\Windows\System32\msvcp_win.dll",
    r"C:\Windows\System32\ucrtbase.dll",
    r"C:\Windows\System32\gdi32full.dll",
    r"C:\Windows\System32\shell32.dll",
    r"C:\Windows\System32\windows.storage.dll",
    r"C:\Program Files\Google\Chrome\Application\120.0.6099.130\chrome_elf.dll",
    r"C:\Program Files\Microsoft Office\root\Office16\mso20win32client.dll",
)
FILES = (
    r"C:\Users\{u}\Documents\Report_{n}.docx",
    r"C:\Users\{u}\Documents\Budget_{n}.xlsx",
    r"C:\Users\{u}\AppData\Local\Google\Chrome\User Data\Default\Cache\Cache_Data\f_{h}",
    r"C:\Users\{u}\AppData\Local\Microsoft\OneDrive\logs\Personal\SyncDiagnostics_{n}.log",
    r"C:\Users\{u}\Pictures\IMG_{n}.jpg",
    r"C:\ProgramData\Microsoft\Windows Defender\Scans\History\CacheManager\{h}.bin",
)
REGISTRY = (
    r"HKU\S-1-5-21-1004336348-1177238915-682003330-{n}\Software\Microsoft\Office\16.0\Common\Roaming\Identities\{h}",
    r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Explorer\FolderDescriptions\{{{h}}}",
    r"HKU\S-1-5-21-1004336348-1177238915-682003330-{n}\Software\Google\Chrome\PreferenceMACs\Default\{h}",
    r"HKLM\SYSTEM\CurrentControlSet\Services\bam\State\UserSettings\S-1-5-21-1004336348-{n}\Device{h}",
)
REGISTRY_DETAILS = ("DWORD (0x00000001)", "DWORD (0x00000000)", "Binary Data", "QWORD (0x01da-0x{h})")
DOMAINS = (
    "www.office.com",
    "outlook.office365.com",
    "teams.microsoft.com",
    "www.google.com",
    "clients2.google.com",
    "update.googleapis.com",
    "login.microsoftonline.com",
    "slack.com",
    "zoom.us",
    "github.com",
    "cdn{n}.example-cdn.net",
    "api.corp.example.com",
)
SCRIPTS = (
    "Get-ChildItem -Path C:\\Users\\{u}\\Documents -Filter *.docx | Sort-Object LastWriteTime",
    "Import-Module Microsoft.PowerShell.Management; Get-Service -Name Spooler",
    "$report = Get-Content .\\report_{n}.csv | ConvertFrom-Csv; $report | Measure-Object",
    "Write-Host 'Build {n} finished'",
    "Get-Date -Format yyyyMMdd",
)
SERVICES = ("Windows Update", "Print Spooler", "Background Intelligent Transfer Service", "Windows Search")
PROCESS_ACCESS = ("0x1000", "0x1400", "0x101000", "0x2000")
CALL_TRACE = (
    r"C:\Windows\SYSTEM32\ntdll.dll+9d4c4|C:\Windows\System32\KERNELBASE.dll+2c13e|"
    r"C:\Program Files\Google\Chrome\Application\chrome.exe+{h}"
)


def _fill(template: str, n: int, u: str, h: str) -> str:
    return (
        template.replace("{n}", str(n))
        .replace("{u}", u)
        .replace("{h}", h)
        .replace("{{", "{")
        .replace("}}", "}")
    )


class _Gen:
    """Vectorised-enough generator of benign values for n rows (one draw per row, fixed seed)."""

    def __init__(self, rng: np.random.Generator, n: int, network: np.ndarray) -> None:
        self.rng = rng
        self.n = n
        self.num = rng.integers(1000, 99999, size=n)
        self.user = rng.integers(len(USERS), size=n)
        self.hexes = rng.integers(0, 2**40, size=n)
        self.proc = rng.integers(len(PROCESSES), size=n)
        # network connections come from browsers and sync/meeting clients, as on a real desktop
        self.proc[network] = rng.choice(NETWORK_PROCESSES, size=int(network.sum()))
        self.parent = rng.integers(len(PARENTS), size=n)
        self.variant = rng.integers(0, 2, size=n)

    def templated(self, templates: tuple[str, ...]) -> list[str]:
        pick = self.rng.integers(len(templates), size=self.n)
        return [
            _fill(templates[p], int(n), USERS[u], f"{h:010x}")
            for p, n, u, h in zip(pick, self.num, self.user, self.hexes, strict=True)
        ]

    def choice(self, values: tuple[str, ...]) -> list[str]:
        pick = self.rng.integers(len(values), size=self.n)
        return [values[p] for p in pick]

    def image(self) -> list[str]:
        return [PROCESSES[p][0] for p in self.proc]

    def process_field(self, position: int) -> list[str]:
        return [PROCESSES[p][position] for p in self.proc]

    def command_line(self) -> list[str]:
        out = []
        for p, v, n, u, h in zip(self.proc, self.variant, self.num, self.user, self.hexes, strict=True):
            templates = PROCESSES[p][5]
            out.append(_fill(templates[v % len(templates)], int(n), USERS[u], f"{h:010x}"))
        return out

    def parent_image(self) -> list[str]:
        return [PARENTS[p][0] for p in self.parent]

    def parent_command_line(self) -> list[str]:
        return [PARENTS[p][1] for p in self.parent]

    def user_name(self) -> list[str]:
        return [USERS[u] for u in self.user]

    def domain_user(self) -> list[str]:
        return [f"{DOMAIN}\\{USERS[u]}" for u in self.user]

    def hashes(self) -> list[str]:
        words = self.rng.integers(0, 2**63, size=(self.n, 2))
        return [f"SHA1={a:016X}{b:016X}0000,MD5={b:016X}{a:016X},IMPHASH={a:016X}{a:016X}" for a, b in words]

    def ip(self, prefix: str) -> list[str]:
        octets = self.rng.integers(1, 254, size=(self.n, 2))
        return [f"{prefix}.{a}.{b}" for a, b in octets]

    def guid(self) -> list[str]:
        words = self.rng.integers(0, 2**63, size=(self.n, 2))
        return [
            f"{{{a & 0xFFFFFFFF:08X}-{(a >> 32) & 0xFFFF:04X}-{b & 0xFFFF:04X}-0000-"
            f"{b >> 16 & 0xFFFFFFFFFFFF:012X}}}"
            for a, b in words
        ]


#: Event column -> how its benign replacement is drawn (applied where the template has a value).
PERTURB: dict[str, Callable[[_Gen], list[str]]] = {
    # process identity (process_creation, image_load, network, file, registry, dns, ...)
    "Image": _Gen.image,
    "NewProcessName": _Gen.image,
    "ProcessName": _Gen.image,
    "SourceImage": _Gen.image,
    "Application": _Gen.image,
    "OriginalFileName": lambda g: g.process_field(1),
    "CommandLine": _Gen.command_line,
    "ParentImage": _Gen.parent_image,
    "ParentProcessName": _Gen.parent_image,
    "ParentCommandLine": _Gen.parent_command_line,
    "TargetImage": _Gen.parent_image,
    "CurrentDirectory": lambda g: [f"C:\\Users\\{u}\\" for u in g.user_name()],
    "Description": lambda g: g.process_field(2),
    "Product": lambda g: g.process_field(3),
    "Company": lambda g: g.process_field(4),
    "FileVersion": lambda g: g.choice(
        ("10.0.19041.1 (WinBuild.160101.0800)", "120.0.6099.130", "16.0.17029.20068")
    ),
    "Hashes": _Gen.hashes,
    "Hash": _Gen.hashes,
    "IntegrityLevel": lambda g: g.choice(("Medium", "Medium", "High")),
    "User": _Gen.domain_user,
    "ParentUser": _Gen.domain_user,
    "RuleName": lambda g: g.choice(("-", "")),
    # image load
    "ImageLoaded": lambda g: g.choice(DLLS),
    "Signature": lambda g: g.choice(("Microsoft Windows", "Google LLC", "Microsoft Corporation")),
    "SignatureStatus": lambda g: g.choice(("Valid",)),
    # file / registry / dns / network
    "TargetFilename": lambda g: g.templated(FILES),
    "TargetObject": lambda g: g.templated(REGISTRY),
    "Details": lambda g: g.templated(REGISTRY_DETAILS),
    "NewName": lambda g: g.templated(REGISTRY),
    "QueryName": lambda g: g.templated(DOMAINS),
    "QueryResults": lambda g: [f"::ffff:{ip};" for ip in g.ip("52.96")],
    "DestinationHostname": lambda g: g.templated(DOMAINS),
    "DestinationIp": lambda g: g.ip("52.112"),
    "SourceIp": lambda g: g.ip("10.20"),
    "SourceHostname": lambda g: g.choice(HOSTS),
    "DestinationPortName": lambda g: g.choice(("https", "http", "")),
    "DestinationPort": lambda g: g.choice(("443", "443", "80")),
    "SourcePort": lambda g: [str(49152 + n % 16000) for n in g.num],
    # process access
    "GrantedAccess": lambda g: g.choice(PROCESS_ACCESS),
    "CallTrace": lambda g: g.templated((CALL_TRACE,)),
    # PowerShell
    "ScriptBlockText": lambda g: g.templated(SCRIPTS),
    "Path": lambda g: g.templated((r"C:\Users\{u}\Documents\Scripts\report_{n}.ps1",)),
    # Security logons / privileges
    "SubjectUserName": _Gen.user_name,
    "TargetUserName": _Gen.user_name,
    "SubjectDomainName": lambda g: g.choice((DOMAIN,)),
    "TargetDomainName": lambda g: g.choice((DOMAIN,)),
    "WorkstationName": lambda g: g.choice(("WS-0142", "WS-0217", "WS-0388")),
    "IpAddress": lambda g: g.ip("10.20"),
    "LogonProcessName": lambda g: g.choice(("User32 ", "Advapi  ", "Kerberos")),
    "AuthenticationPackageName": lambda g: g.choice(("Negotiate", "Kerberos")),
    "LogonType": lambda g: g.choice(("2", "3", "5", "7", "11")),
    "PrivilegeList": lambda g: g.choice(
        ("SeChangeNotifyPrivilege", "SeImpersonatePrivilege\r\n\t\t\tSeChangeNotifyPrivilege")
    ),
    "TargetUserSid": lambda g: [f"S-1-5-21-1004336348-1177238915-682003330-{n}" for n in g.num],
    "SubjectUserSid": lambda g: [f"S-1-5-21-1004336348-1177238915-682003330-{n}" for n in g.num],
    "TargetLogonId": lambda g: [f"0x{h:x}" for h in g.hexes],
    "SubjectLogonId": lambda g: [f"0x{h:x}" for h in g.hexes],
    "LogonGuid": _Gen.guid,
    "ProcessGuid": _Gen.guid,
    "ParentProcessGuid": _Gen.guid,
    # System service control manager
    "param1": lambda g: g.choice(SERVICES),
    "param2": lambda g: g.choice(("running", "stopped")),
    "Computer": lambda g: g.choice(HOSTS),
}


# ---------------------------------------------------------------- lanes


@dataclass
class Dataset:
    """One lane's cached files and how they were made."""

    lane: str
    rows: int
    seed: int
    key: str
    parquet: Path
    ndjson: Path
    #: EVTX lane: the source files repeated ``evtx_repeats`` times (attack lane only).
    evtx_files: list[Path] = field(default_factory=list)
    evtx_repeats: int = 0
    evtx_records: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def evtx_inputs(self) -> list[Path]:
        """The EVTX lane's input list: every source file, ``evtx_repeats`` times over."""
        return self.evtx_files * self.evtx_repeats


def dataset_key(lane: str, rows: int, seed: int, attack_fraction: float) -> str:
    """A short hash of everything that determines a lane's rows."""
    parts = [str(DATASET_VERSION), lane, str(rows), str(seed), repr(attack_fraction), flatten_impl_key()]
    if lane == "realistic":
        parts.append(inspect.getsource(_Gen))
        parts.append(repr(sorted(PERTURB)))
        parts.append(repr(PROCESSES) + repr(REALISTIC_MIX))
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:10]


def attack_table(base: BaseEvents, rows: int) -> pa.Table:
    """The attack lane: source events as they are, cycling in file order."""
    return base.table.take(pa.array(np.arange(rows, dtype=np.int64) % base.table.num_rows))


def realistic_table(
    base: BaseEvents, rows: int, seed: int, attack_fraction: float = ATTACK_FRACTION
) -> tuple[pa.Table, dict[str, Any]]:
    """The realistic lane: a host's channel mix of perturbed real events, plus a few attack events."""
    rng = np.random.default_rng(seed)
    classes = [c for c in REALISTIC_MIX if ((base.channel == c[0]) & (base.event_id == c[1])).any()]
    weights = np.array([REALISTIC_MIX[c] for c in classes])
    weights /= weights.sum()
    class_of_row = rng.choice(len(classes), size=rows, p=weights)
    template = np.empty(rows, dtype=np.int64)
    for number, (channel, event_id) in enumerate(classes):
        candidates = np.flatnonzero((base.channel == channel) & (base.event_id == event_id))
        where = np.flatnonzero(class_of_row == number)
        template[where] = rng.choice(candidates, size=where.size)
    is_attack = rng.random(rows) < attack_fraction
    template[is_attack] = rng.integers(0, base.table.num_rows, size=int(is_attack.sum()))

    table = base.table.take(pa.array(template))
    benign = pa.array(~is_attack)
    network = np.zeros(rows, dtype=bool)
    if (SYSMON, 3) in classes:
        network = class_of_row == classes.index((SYSMON, 3))
    gen = _Gen(rng, rows, network & ~is_attack)
    for name in sorted(PERTURB):
        if name not in table.column_names:
            continue
        column = table.column(name).combine_chunks()
        if not pa.types.is_string(column.type):
            continue  # numbers/booleans carry no attack content
        fresh = pa.array(PERTURB[name](gen), pa.string())
        keep_original = pc.or_(pc.invert(benign), pc.is_null(column))
        table = table.set_column(
            table.column_names.index(name), name, pc.if_else(keep_original, column, fresh)
        )
    info = {
        "classes": {f"{c[0]}:{c[1]}": round(float(w), 4) for c, w in zip(classes, weights, strict=True)},
        "attack_rows": int(is_attack.sum()),
        "attack_fraction": attack_fraction,
        "perturbed_fields": sorted(n for n in PERTURB if n in table.column_names),
    }
    return table, info


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write a lane's Parquet file (atomically)."""
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp, row_group_size=ROW_GROUP_SIZE)
    tmp.replace(path)


def _ndjson_lines(table: pa.Table) -> Iterator[bytes]:
    # Touch only the non-null cells (an event fills ~25 of the ~420 columns): 10x faster than to_pylist.
    for batch in table.to_batches(max_chunksize=20_000):
        rows: list[dict[str, Any]] = [{} for _ in range(batch.num_rows)]
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            if column.null_count == len(column):
                continue
            if column.null_count == 0:
                for row, value in zip(rows, column.to_pylist(), strict=True):
                    row[name] = value
                continue
            positions = pc.indices_nonzero(column.is_valid())
            values = column.take(positions).to_pylist()
            for position, value in zip(positions.to_pylist(), values, strict=True):
                rows[position][name] = value
        for row in rows:
            yield orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)


def write_ndjson(table: pa.Table, path: Path) -> None:
    """Write a lane as NDJSON: one flat object per event, absent fields omitted (atomically)."""
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as out:
        buffer: list[bytes] = []
        for line in _ndjson_lines(table):
            buffer.append(line)
            if len(buffer) >= 10_000:
                out.write(b"".join(buffer))
                buffer.clear()
        out.write(b"".join(buffer))
    tmp.replace(path)


def build(
    lanes: Iterable[str],
    rows: int,
    *,
    data_dir: Path = DEFAULT_DATA_DIR,
    shared: Path = DEFAULT_SHARED,
    seed: int = DEFAULT_SEED,
    attack_fraction: float = ATTACK_FRACTION,
    log: Callable[[str], None] = print,
) -> dict[str, Dataset]:
    """Build (or reuse from ``data_dir``) the requested lanes with ``rows`` events each."""
    data_dir.mkdir(parents=True, exist_ok=True)
    base: BaseEvents | None = None
    files = evtx_files(shared)
    out: dict[str, Dataset] = {}
    for lane in lanes:
        if lane not in LANES:
            raise ValueError(f"unknown lane {lane!r} (choose from {', '.join(LANES)})")
        key = dataset_key(lane, rows, seed, attack_fraction)
        stem = f"{lane}-{rows}-{key}"
        dataset = Dataset(
            lane=lane,
            rows=rows,
            seed=seed,
            key=key,
            parquet=data_dir / f"{stem}.parquet",
            ndjson=data_dir / f"{stem}.ndjson",
        )
        manifest = data_dir / f"{stem}.json"
        if dataset.parquet.exists() and dataset.ndjson.exists() and manifest.exists():
            dataset.info = json.loads(manifest.read_text())["info"]
            log(f"dataset {lane}: reusing {dataset.parquet.name} (+ .ndjson)")
        else:
            if base is None:
                log(f"reading {len(files)} source EVTX files ...")
                base = load_base(shared)
                log(f"  {base.table.num_rows:,} events, {base.table.num_columns} columns")
            if lane == "attack":
                table = attack_table(base, rows)
                dataset.info = {"source_events": base.table.num_rows}
            else:
                table, dataset.info = realistic_table(base, rows, seed, attack_fraction)
                dataset.info["source_events"] = base.table.num_rows
            dataset.info["columns"] = table.num_columns
            dataset.info["flatten"] = flatten_impl_key()
            log(f"dataset {lane}: writing {rows:,} events to {dataset.parquet.name} and .ndjson ...")
            write_parquet(table, dataset.parquet)
            write_ndjson(table, dataset.ndjson)
            manifest.write_text(json.dumps({"info": dataset.info, "rows": rows, "seed": seed}, indent=1))
            _remove_stale(data_dir, lane, rows, key)
        if lane == "attack":
            source_events = int(dataset.info["source_events"])
            dataset.evtx_files = files
            dataset.evtx_repeats = max(1, -(-rows // source_events))
            dataset.evtx_records = dataset.evtx_repeats * source_events
        out[lane] = dataset
    return out


def _remove_stale(data_dir: Path, lane: str, rows: int, key: str) -> None:
    """Delete this lane's files of the same size built with an older key (they are never reused)."""
    stale = re.compile(rf"{lane}-{rows}-(?!{key})[0-9a-f]{{10}}\.(parquet|ndjson|json)")
    for path in data_dir.iterdir():
        if stale.fullmatch(path.name):
            path.unlink(missing_ok=True)
