"""Manifest intake: read CSV / JSONL / YAML manifests or a folder, validate every row, register assets.

Every row is checked and every problem reported together (row, field, reason); bad rows never
block good ones. A problem of the manifest as a whole is reported once, not on every row it
spoils: a CSV header with an unknown or a missing column is one "header" problem (with the
closest known column name as a suggestion), and an unknown field that several JSONL/YAML rows
share is one problem listing those rows. The asset key is a content hash of what determines
the video, so submitting the same manifest twice registers nothing new.
"""

from __future__ import annotations

import csv
import difflib
import getpass
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from avatarflow.errors import ManifestError
from avatarflow.storage import sha256_file
from db.models import Asset, Batch, Event, utcnow
from db.session import Database
from db.states import AssetState
from inference.presets import PRESETS
from tasks.prompts import PromptError, TemplateLibrary, check_prompt

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus")
FIELDS = {"image", "audio", "prompt", "template", "vars", "preset", "priority", "tags", "external_id"}
REQUIRED = ("image", "audio")  # and a prompt or a template
# Manifest names that say nothing about the batch: `spring/batch.csv` becomes batch "spring-batch".
GENERIC_STEMS = frozenset({"batch", "manifest", "assets", "input", "inputs"})
KEY_VERSION = 1  # bump when what goes into the asset key changes


@dataclass(frozen=True)
class Problem:
    row: int | None  # 1-based data row; None for the manifest as a whole
    field: str
    reason: str
    location: str = ""  # where in the file: "line 7", "item 3", "header"
    # A manifest-wide problem (row None) lists the rows it rejects: reported once, not per row.
    rows: tuple[int, ...] = ()

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row is not None else "manifest"
        if self.location:
            where += f" ({self.location})"
        return f"{where}, {self.field}: {self.reason}"


@dataclass(frozen=True)
class RawRow:
    number: int
    location: str
    data: dict[str, Any]
    # Fields whose problems a manifest-wide problem already reports (a CSV header's unknown or
    # missing columns): the row is still rejected for them, but they are not repeated on it.
    reported: frozenset[str] = frozenset()


@dataclass(frozen=True)
class AssetSpec:
    """A validated row: everything needed to register one asset."""

    row: int
    image: Path
    audio: Path
    image_sha256: str
    audio_sha256: str
    prompt: str
    template: str | None
    template_vars: dict[str, Any]
    preset: str
    priority: int
    tags: list[str]
    external_id: str | None

    @property
    def key(self) -> str:
        return asset_key(self.image_sha256, self.audio_sha256, self.prompt, self.preset)


def asset_key(image_sha256: str, audio_sha256: str, prompt: str, preset: str) -> str:
    """Content hash of the inputs that determine the video (not priority, tags or ids)."""
    payload = json.dumps(
        {"v": KEY_VERSION, "image": image_sha256, "audio": audio_sha256, "prompt": prompt,
         "preset": preset},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class IntakeResult:
    source: Path
    rows: int = 0
    specs: list[AssetSpec] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    batch_id: int | None = None
    batch_name: str | None = None
    created: list[tuple[int, str]] = field(default_factory=list)  # (row, key)
    existing: list[tuple[int, str, str]] = field(default_factory=list)  # (row, key, state)

    @property
    def rejected_rows(self) -> list[int]:
        rows = {p.row for p in self.problems if p.row is not None}
        return sorted(rows.union(*(p.rows for p in self.problems)))


def suggest(name: str, known: Iterable[str] = FIELDS) -> str | None:
    """The known field name closest to a misspelt one (`imgae` -> `image`), if any is close."""
    close = difflib.get_close_matches(name.strip().lower().replace(" ", "_").replace("-", "_"),
                                      sorted(known), n=1, cutoff=0.6)
    return close[0] if close else None


def _unknown_reason(name: str, what: str = "field") -> str:
    hint = suggest(name)
    return f"unknown {what}" + (f" (did you mean {hint!r}?)" if hint else "")


def _row_list(rows: Sequence[int], total: int | None = None) -> str:
    """`rows 1-3, 7` (or `all 20 rows`) for a sorted list of row numbers."""
    if total is not None and len(rows) == total and total > 1:
        return f"all {total} rows"
    spans: list[str] = []
    start = previous = rows[0]
    for row in [*rows[1:], None]:
        if row is not None and row == previous + 1:
            previous = row
            continue
        spans.append(str(start) if start == previous else f"{start}-{previous}")
        if row is not None:
            start = previous = row
    return ("row " if len(rows) == 1 else "rows ") + ", ".join(spans)


# --------------------------------------------------------------------------- reading


def read_manifest(path: Path) -> tuple[list[RawRow], list[Problem]]:
    """Rows of a manifest file or folder, plus problems that stop single rows from being read."""
    if path.is_dir():
        return _read_folder(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc}") from exc
    if suffix == ".csv":
        return _read_csv(text)
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(text)
    if suffix in (".yaml", ".yml"):
        return _read_yaml(text, path)
    raise ManifestError(
        f"manifest {path.name}: unknown format {suffix or '(no suffix)'}; use .csv, .jsonl, "
        ".yaml or a folder of name.jpg + name.wav pairs"
    )


def _read_csv(text: str) -> tuple[list[RawRow], list[Problem]]:
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames:
        raise ManifestError("the CSV manifest is empty (no header row)")
    columns = {c.strip().lower(): c.strip() for c in reader.fieldnames if c is not None}
    unknown = [c for c in columns if c not in FIELDS and not c.startswith("var.")]
    missing = [c for c in REQUIRED if c not in columns]
    if "prompt" not in columns and "template" not in columns:
        missing.append("prompt or template")
    rows: list[RawRow] = []
    for number, record in enumerate(reader, start=1):
        data: dict[str, Any] = {}
        variables: dict[str, Any] = {}
        for column, value in record.items():
            if column is None:  # more cells than header columns
                data.setdefault("__extra__", value)
                continue
            name = column.strip().lower()
            if name.startswith("var."):
                if value not in (None, ""):
                    variables[name[4:]] = value
            elif value not in (None, ""):
                data[name] = value.strip() if isinstance(value, str) else value
        if variables:
            data["vars"] = {**_json_object(data.get("vars")), **variables} if "vars" in data else variables
        rows.append(RawRow(number, f"line {reader.line_num}", data))
    return _header_check(rows, columns, unknown, missing)


def _header_check(
    rows: list[RawRow], columns: dict[str, str], unknown: list[str], missing: list[str]
) -> tuple[list[RawRow], list[Problem]]:
    """One problem for what is wrong with a CSV header, instead of the same ones on every row.

    A missing required column rejects every row; an unknown column rejects the rows with a value
    in it (an empty column costs nothing). A header problem that touches a single row is left to
    that row's own problems, which then name the row and suggest the same.
    """
    used = sorted({r.number for r in rows if any(c in r.data for c in unknown)})
    spoilt = [r.number for r in rows] if missing else used
    if not spoilt or (not missing and len(spoilt) < 2):
        return rows, []
    absent = set(missing) | ({"prompt", "template"} if "prompt or template" in missing else set())
    # Named: the unknown columns with a value somewhere, and any that explains a missing one.
    unknown = [c for c in unknown if any(c in r.data for r in rows) or suggest(c) in absent]
    parts = []
    for name in unknown:
        hint = suggest(name)
        shown = repr(columns[name]) if name else "an unnamed column"
        parts.append(f"unknown column {shown}" + (f" (did you mean {hint!r}?)" if hint else ""))
    if missing:
        parts.append(f"missing required column{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    if any(suggest(name) is None for name in unknown):
        parts.append(f"known columns: {', '.join(sorted(FIELDS))}, var.<name>")
    reason = "; ".join(parts) + f" — {_row_list(spoilt, len(rows))} rejected"
    reported = frozenset(unknown) | absent
    marked = [RawRow(r.number, r.location, r.data, reported) if r.number in spoilt else r for r in rows]
    return marked, [Problem(None, "columns", reason, "header", tuple(spoilt))]


def _json_object(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value)
    except (TypeError, json.JSONDecodeError):
        return {"__invalid__": value}
    return parsed if isinstance(parsed, dict) else {"__invalid__": value}


def _read_jsonl(text: str) -> tuple[list[RawRow], list[Problem]]:
    rows: list[RawRow] = []
    problems: list[Problem] = []
    number = 0
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        number += 1
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(number, "(row)", f"not valid JSON: {exc.msg} at column {exc.colno}", f"line {line_no}"))
            continue
        if not isinstance(data, dict):
            problems.append(Problem(number, "(row)", "each line must be a JSON object", f"line {line_no}"))
            continue
        rows.append(RawRow(number, f"line {line_no}", {str(k).lower(): v for k, v in data.items()}))
    return rows, problems


def _read_yaml(text: str, path: Path) -> tuple[list[RawRow], list[Problem]]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ManifestError(f"manifest {path.name} is not valid YAML: {exc}") from exc
    defaults: dict[str, Any] = {}
    if isinstance(document, dict):
        defaults = document.get("defaults") or {}
        items = document.get("assets")
        if items is None:
            raise ManifestError(f"manifest {path.name}: a YAML mapping needs an 'assets' list")
    else:
        items = document
    if not isinstance(items, list):
        raise ManifestError(f"manifest {path.name}: expected a list of assets")
    rows: list[RawRow] = []
    problems: list[Problem] = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            problems.append(Problem(number, "(row)", "each asset must be a mapping of fields", f"item {number}"))
            continue
        data = {**{str(k).lower(): v for k, v in defaults.items()}, **{str(k).lower(): v for k, v in item.items()}}
        rows.append(RawRow(number, f"item {number}", data))
    return rows, problems


def _read_folder(folder: Path) -> tuple[list[RawRow], list[Problem]]:
    """`name.jpg` + `name.wav` pairs; `name.txt` (or a shared `prompt.txt`) holds the prompt."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = {p.stem: p for p in files if p.suffix.lower() in IMAGE_SUFFIXES}
    audios = {p.stem: p for p in files if p.suffix.lower() in AUDIO_SUFFIXES}
    shared_prompt = folder / "prompt.txt"
    rows: list[RawRow] = []
    problems: list[Problem] = []
    for number, stem in enumerate(sorted(set(images) | set(audios)), start=1):
        if stem not in audios:
            problems.append(Problem(number, "audio", f"image {images[stem].name} has no matching {stem}.wav (or .flac/.mp3/…)", stem))
            continue
        if stem not in images:
            problems.append(Problem(number, "image", f"audio {audios[stem].name} has no matching {stem}.jpg (or .png/…)", stem))
            continue
        data: dict[str, Any] = {"image": images[stem].name, "audio": audios[stem].name, "external_id": stem}
        prompt_file = folder / f"{stem}.txt"
        if prompt_file.is_file():
            data["prompt"] = prompt_file.read_text(encoding="utf-8")
        elif shared_prompt.is_file():
            data["prompt"] = shared_prompt.read_text(encoding="utf-8")
        else:
            data["template"] = "default"
        rows.append(RawRow(number, stem, data))
    return rows, problems


# --------------------------------------------------------------------------- validation


class _Hashes:
    """File hashes cached by (path, size, mtime): one manifest often reuses the same files."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int, int], str] = {}

    def __call__(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._cache:
            self._cache[key] = sha256_file(path)
        return self._cache[key]


def _check_file(
    value: Any, field_name: str, base: Path, roots: Sequence[Path], suffixes: tuple[str, ...]
) -> tuple[Path | None, str | None]:
    if value in (None, ""):
        return None, f"missing; give the path of the {field_name} file"
    if not isinstance(value, str):
        return None, f"must be a path, got {type(value).__name__}"
    path = Path(os.path.expanduser(value))
    path = (path if path.is_absolute() else base / path).resolve()
    if not any(path.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(r) for r in roots)
        return None, (f"{path} is outside the allowed input folders ({allowed}); move it there or "
                      "add its folder to AVATARFLOW_INPUT_ROOTS")
    if not path.exists():
        return None, f"file not found: {path}"
    if not path.is_file():
        return None, f"not a regular file: {path}"
    try:
        with open(path, "rb") as handle:
            if not handle.read(1):
                return None, f"file is empty: {path}"
    except OSError as exc:
        return None, f"file cannot be read: {path} ({exc.strerror})"
    if path.suffix.lower() not in suffixes:
        article = "an" if field_name[0] in "aeiou" else "a"
        return None, f"{path.name} does not look like {article} {field_name} file (expected {', '.join(suffixes)})"
    return path, None


def _tags(value: Any) -> list[str] | None:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        separator = ";" if ";" in value else ","
        return [t.strip() for t in value.split(separator) if t.strip()]
    if isinstance(value, list) and all(isinstance(t, (str, int)) for t in value):
        return [str(t) for t in value]
    return None


def validate_rows(
    rows: Iterable[RawRow],
    *,
    base: Path,
    roots: Sequence[Path],
    templates: TemplateLibrary,
    default_preset: str,
) -> tuple[list[AssetSpec], list[Problem]]:
    """Check every row; return the good ones as specs and every problem found.

    An unknown field suggests the closest known one; the row's own complaint about that field
    being missing is then left out ("imgae" says why there is no image). The same unknown field
    on several rows is one problem of the manifest listing those rows (`Problem.rows`).
    """
    specs: list[AssetSpec] = []
    problems: list[Problem] = []
    hashes = _Hashes()
    seen_keys: dict[str, int] = {}
    seen_ids: dict[str, int] = {}
    count = 0
    for raw in rows:
        count += 1
        found: list[Problem] = []
        # The rest of a row's problems on a field it misspelt ("imgae": no image) say nothing new.
        explained = set(raw.reported)

        def bad(field_name: str, reason: str, raw: RawRow = raw, found: list[Problem] = found) -> None:
            found.append(Problem(raw.number, field_name, reason, raw.location))

        data = raw.data
        for unknown in sorted(set(data) - FIELDS):
            if unknown == "__extra__":
                bad("(row)", "more cells than header columns")
            else:
                bad(unknown, f"{_unknown_reason(unknown)}; known fields: {', '.join(sorted(FIELDS))}")
                hint = suggest(unknown)
                if hint and data.get(hint) in (None, ""):
                    explained.add(hint)

        image, reason = _check_file(data.get("image"), "image", base, roots, IMAGE_SUFFIXES)
        if reason:
            bad("image", reason)
        audio, reason = _check_file(data.get("audio"), "audio", base, roots, AUDIO_SUFFIXES)
        if reason:
            bad("audio", reason)

        preset = str(data.get("preset") or default_preset)
        if preset not in PRESETS:
            bad("preset", f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")

        priority = 0
        if data.get("priority") not in (None, ""):
            try:
                priority = int(str(data["priority"]))
            except ValueError:
                bad("priority", f"must be a whole number, got {data['priority']!r}")

        tags = _tags(data.get("tags"))
        if tags is None:
            bad("tags", "must be a list or a ';'-separated string")

        external_id = data.get("external_id")
        external_id = None if external_id in (None, "") else str(external_id)
        if external_id is not None and external_id in seen_ids:
            bad("external_id", f"duplicate external id {external_id!r} (first used in row {seen_ids[external_id]})")

        variables = data.get("vars") or {}
        if isinstance(variables, str):
            variables = _json_object(variables)
        if not isinstance(variables, dict) or "__invalid__" in variables:
            bad("vars", "must be a mapping of variable names to values (JSON object in CSV)")
            variables = {}

        prompt_text = data.get("prompt")
        template = data.get("template")
        template = None if template in (None, "") else str(template)
        prompt = ""
        if prompt_text not in (None, "") and template:
            bad("prompt", "give either a prompt or a template, not both")
        elif template:
            try:
                prompt = templates.render(template, variables)
            except PromptError as exc:
                bad("template", str(exc))
        else:
            if variables:
                bad("vars", "variables need a template")
            try:
                prompt = check_prompt(str(prompt_text or ""))
            except PromptError as exc:
                bad("prompt", f"{exc}" if prompt_text else "empty prompt; give a prompt or a template (e.g. template: default)")

        if found or image is None or audio is None:
            problems.extend(p for p in found if p.field not in explained)
            continue
        try:
            image_sha, audio_sha = hashes(image), hashes(audio)
        except OSError as exc:
            problems.append(Problem(raw.number, "(row)", f"file vanished while reading: {exc}", raw.location))
            continue
        spec = AssetSpec(
            row=raw.number, image=image, audio=audio, image_sha256=image_sha, audio_sha256=audio_sha,
            prompt=prompt, template=template, template_vars=variables, preset=preset,
            priority=priority, tags=tags or [], external_id=external_id,
        )
        if spec.key in seen_keys:
            problems.append(Problem(raw.number, "(row)", f"duplicate row: same image, audio, prompt and preset as row {seen_keys[spec.key]}", raw.location))
            continue
        seen_keys[spec.key] = raw.number
        if external_id is not None:
            seen_ids[external_id] = raw.number
        specs.append(spec)
    return specs, _group_unknown_fields(problems, count)


def _group_unknown_fields(problems: list[Problem], total: int) -> list[Problem]:
    """An unknown field on several rows (a typo repeated down a JSONL file, a YAML default) is one
    problem naming the rows, not one per row."""
    by_field: dict[str, list[Problem]] = {}
    for p in problems:
        if p.row is not None and p.reason.startswith("unknown field"):
            by_field.setdefault(p.field, []).append(p)
    grouped = {name: found for name, found in by_field.items() if len(found) > 1}
    if not grouped:
        return problems
    kept = [p for p in problems if p.row is None or p.field not in grouped or not p.reason.startswith("unknown field")]
    for name, found in grouped.items():
        rows = tuple(sorted(p.row for p in found if p.row is not None))
        reason = (f"{_unknown_reason(name)}; the {len(rows)} rows with it are rejected; "
                  f"known fields: {', '.join(sorted(FIELDS))}")
        kept.append(Problem(None, name, reason, _row_list(rows, total), rows))
    return kept


# --------------------------------------------------------------------------- registration


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        user = str(os.getuid())
    return f"cli:{user}"


def _insert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def register(
    session: Session,
    specs: Sequence[AssetSpec],
    *,
    batch_name: str,
    source: str | None,
    source_sha256: str | None,
    actor: str,
    chunk: int = 500,
) -> tuple[Batch, list[tuple[int, str]], list[tuple[int, str, str]]]:
    """Register new assets in a batch; return the batch, the created and the already known rows."""
    batch = session.scalar(select(Batch).where(Batch.name == batch_name))
    if batch is None:
        batch = Batch(name=batch_name, source=source, source_sha256=source_sha256, created_by=actor)
        session.add(batch)
        session.flush()
    created: list[tuple[int, str]] = []
    existing: list[tuple[int, str, str]] = []
    insert = _insert(session)
    for start in range(0, len(specs), chunk):
        part = specs[start:start + chunk]
        by_key = {s.key: s for s in part}
        known = dict(session.execute(select(Asset.key, Asset.state).where(Asset.key.in_(by_key))).tuples().all())
        new = [s for s in part if s.key not in known]
        existing += [(s.row, s.key, known[s.key]) for s in part if s.key in known]
        if not new:
            continue
        now = utcnow()
        rows = [
            {
                "key": s.key, "batch_id": batch.id, "external_id": s.external_id, "source_row": s.row,
                "image_path": str(s.image), "image_sha256": s.image_sha256,
                "audio_path": str(s.audio), "audio_sha256": s.audio_sha256,
                "prompt": s.prompt, "template": s.template, "template_vars": s.template_vars,
                "preset": s.preset, "priority": s.priority, "tags": s.tags,
                "state": AssetState.SUBMITTED.value, "details": {}, "version": 1,
                "created_at": now, "updated_at": now,
            }
            for s in new
        ]
        # ON CONFLICT DO NOTHING: a concurrent submit of the same inputs simply wins the row.
        statement = insert(Asset).on_conflict_do_nothing(index_elements=["key"]).returning(Asset.id, Asset.key)
        inserted = dict((k, i) for i, k in session.execute(statement, rows).tuples().all())
        session.execute(
            Event.__table__.insert(),
            [
                {"asset_id": inserted[s.key], "at": now, "actor": actor, "from_state": None,
                 "to_state": AssetState.SUBMITTED.value,
                 "reason": f"submitted in batch {batch_name} (row {s.row})", "data": {}}
                for s in new if s.key in inserted
            ],
        )
        created += [(s.row, s.key) for s in new if s.key in inserted]
        existing += [(s.row, s.key, AssetState.SUBMITTED.value) for s in new if s.key not in inserted]
    return batch, created, existing


def default_batch_name(manifest: Path) -> str:
    """The batch a manifest goes to when no name is given: the manifest's name without suffix.

    A generic name (batch, manifest, assets, input, inputs: `batch.csv`) says nothing, and two
    folders' `batch.csv` would share one batch, so it is prefixed with its folder's name:
    `spring-campaign/batch.csv` goes to batch `spring-campaign-batch`. The name depends on the
    manifest's path only (no date, no counter), so submitting the same file again finds the
    same batch; a batch submitted under the bare stem before this rule is still found (see
    `submit`). Names stay within the 200 characters of `batches.name`.
    """
    stem = manifest.stem
    folder = manifest.parent.name
    if stem.lower() in GENERIC_STEMS and folder:
        return f"{folder[:150]}-{stem}"
    return stem[:200]


def submit(
    database: Database,
    manifest: Path,
    *,
    batch_name: str | None = None,
    input_roots: Sequence[Path] = (),
    default_preset: str = "standard",
    templates: TemplateLibrary | None = None,
    actor: str | None = None,
    dry_run: bool = False,
) -> IntakeResult:
    """Read, validate and register one manifest (file or folder)."""
    manifest = manifest.expanduser().resolve()
    base = manifest if manifest.is_dir() else manifest.parent
    # Resolved like the files they must contain: a root given through a symlink still holds them.
    roots = [Path(root).expanduser().resolve() for root in input_roots] or [base]
    raw_rows, problems = read_manifest(manifest)
    specs, row_problems = validate_rows(
        raw_rows, base=base, roots=roots, templates=templates or TemplateLibrary(),
        default_preset=default_preset,
    )
    result = IntakeResult(
        source=manifest, rows=len(raw_rows) + len({p.row for p in problems if p.row is not None}),
        specs=specs, problems=sorted(problems + row_problems, key=lambda p: (p.row or 0, p.field)),
    )
    result.batch_name = batch_name or default_batch_name(manifest)
    if dry_run or not specs:
        return result
    source_sha = sha256_file(manifest) if manifest.is_file() else None
    with database.session() as session:
        if batch_name is None and result.batch_name != manifest.stem:
            # Submitted before generic names got their folder's name: keep finding that batch.
            legacy = session.scalar(select(Batch).where(Batch.name == manifest.stem,
                                                        Batch.source == str(manifest)))
            if legacy is not None:
                result.batch_name = legacy.name
        batch, result.created, result.existing = register(
            session, specs, batch_name=result.batch_name, source=str(manifest),
            source_sha256=source_sha, actor=actor or default_actor(),
        )
        result.batch_id = batch.id
    return result
