"""Settings read from the environment (prefix `AVATARFLOW_`) and an optional `.env` file."""

from __future__ import annotations

import socket
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from avatarflow.storage import Storage


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AVATARFLOW_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    data_root: Path = Field(
        default=Path("var"), description="Folder holding the SQLite file and per-asset folders."
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default is SQLite at <data_root>/avatarflow.db. "
        "PostgreSQL: postgresql+psycopg://user:pass@host/db",
    )
    input_roots: list[Path] = Field(
        default_factory=list,
        description="Folders manifests may take inputs from. Empty: only the manifest's own folder.",
    )
    templates_dir: Path | None = Field(
        default=None, description="Extra prompt templates; they override built-ins of the same name."
    )
    default_preset: str = "standard"

    # preprocessing: face
    face_backend: str = Field(default="mediapipe", description="mediapipe (bundled) or face-alignment")
    face_alignment_weights: Path | None = Field(
        default=None, description="Folder with face-alignment's s3fd and 2DFAN4 weight files."
    )
    face_min_px: int = Field(default=64, description="Refuse faces narrower than this (source pixels).")
    face_pad_mode: str = Field(default="blur", description="How to fill past the image edge: blur or reflect.")
    face_max_padded: float = Field(
        default=0.25, ge=0, le=1, description="Refuse a portrait when even the tightest framing would invent "
        "more than this share of the crop past the photo's edge")
    image_max_pixels: int = Field(
        default=100_000_000, gt=0, description="Refuse portraits of more pixels, read from the header before decoding")
    # preprocessing: audio
    audio_target_lufs: float = -23.0
    audio_min_seconds: float = 1.0
    audio_max_seconds: float = Field(
        default=3600.0, gt=0, description="Refuse speech longer than this, from the header before decoding "
        "(decoding holds the whole file: ≈ 1.4 GB an hour at 48 kHz stereo)")
    audio_max_bytes: int = Field(default=2_000_000_000, gt=0, description="Refuse audio files larger than this")
    audio_max_segment_seconds: float = Field(
        default=60.0, description="Longer speech is split at pauses into segments of at most this."
    )
    # generation
    engine: Literal["cpu", "liveavatar", "liveavatar-warm", "instant"] = Field(
        default="cpu", description="cpu (no GPU, no weights), liveavatar (per job), liveavatar-warm "
        "(a long-lived worker per gang); instant is for benchmarks")
    gang_lock: Literal["prefect", "process"] = Field(
        default="prefect", description="How a GPU gang is held: prefect (a global concurrency limit, "
        "across processes and hosts) or process (a lock in this process only: tests, one-process runs)")
    cpu_engine_timeout_s: float = Field(default=1800, description="Wall-clock limit of one CPU-engine video")
    gangs: str = Field(default="cpu", description='GPU gangs of this host, e.g. "0" or "0;1-5"; "cpu" for the CPU engine')
    max_generation_attempts: int = Field(default=3, description="Generations per asset, regenerations included")
    gang_lease_seconds: float = Field(
        default=60, ge=60, description="A gang's concurrency slot lapses this long after its holder died "
        "(Prefect's minimum is 60 s)")
    # Live Avatar (engine liveavatar / liveavatar-warm); see README "Live Avatar on GPUs"
    liveavatar_dir: Path | None = Field(default=None, description="The Live Avatar checkout")
    liveavatar_ckpt_dir: Path | None = Field(default=None, description="Wan2.2-S2V-14B weights folder")
    liveavatar_lora: Path | None = Field(default=None, description="Absolute path to liveavatar.safetensors")
    liveavatar_torchrun: Path | None = Field(default=None, description="torchrun of the Live Avatar env")
    liveavatar_python: Path | None = Field(
        default=None, description="python of the Live Avatar env (default: the one beside torchrun)")
    liveavatar_fp8: bool = Field(default=False, description="fp8 DiT (needs compute capability >= 8.9)")
    liveavatar_offload: bool = True
    liveavatar_compile: bool = Field(
        default=False, description="ENABLE_COMPILE for Live Avatar (always passed; compiling needs Python 3.10)")
    liveavatar_timeout_floor_s: float = 1800.0
    liveavatar_timeout_per_video_second_s: float = 60.0
    liveavatar_master_port_first: int = 29500
    liveavatar_master_port_last: int = 29899
    # transcoding
    transcode_small_height: int = Field(default=360, description="Height of the smaller rendition")
    transcode_x264_preset: str = Field(default="veryfast", description="x264 speed/size trade-off")
    transcode_timeout_s: float = 600.0
    # pipeline
    pipeline_threads: int = Field(default=32, description="Prefect task-runner threads per batch run")
    cpu_workers: int = Field(default=2, description="CPU-heavy stage runs at once per process")
    # QC and review
    scorer: Literal["auto", "landmark", "syncnet"] = Field(
        default="auto", description="Lip-sync scorer: auto (SyncNet when syncnet_weights is set, else "
        "landmark), landmark (weight-free) or syncnet")
    syncnet_weights: Path | None = Field(default=None, description="SyncNet weights file (syncnet scorer)")
    lipsync_calibration: Path | None = Field(
        default=None, description="A calibration JSON (or a folder of <scorer>.json) other than the shipped one")
    qc_gate: float = Field(default=0.92, description="Calibrated lip-sync score a video must exceed")
    qc_margin: float = Field(default=0.03, description="Scores within this of the gate go to review")
    review_sample_rate: float = Field(default=0.1, description="Share of passed videos sampled for review")
    prefect_ui_url: str = "http://127.0.0.1:4200"
    prefect_port: int = Field(
        default=4200, description="Port of the local Prefect server avatarflow starts (`avatarflow server "
        "start`, and `run`/`deliver`/`demo` when PREFECT_API_URL is not set)")
    review_url: str = "http://127.0.0.1:8080"
    sqlite_busy_timeout_ms: int = 30_000
    claim_lease_seconds: int = 15 * 60
    generation: Literal["flow", "workers"] = Field(
        default="flow", description="Who generates: the batch flow itself (flow), or long-lived gang workers "
        "(`avatarflow gang worker`, one per gang) that the flow waits for (workers)")
    worker_lease_seconds: float = Field(
        default=60.0, description="A gang worker renews its claim and heartbeat every quarter of this; a "
        "worker silent for longer is presumed dead and its video goes to another gang")
    worker_poll_seconds: float = Field(default=2.0, description="How often an idle gang worker looks for work")
    db_retry_seconds: float = Field(
        default=180.0, gt=0, description="How long work waits out a database outage (retrying with backoff) "
        "before it gives up and leaves the asset for the next round or run")
    partial_max_age_seconds: float = Field(
        default=3600.0, gt=0, description="Half-written files untouched this long are leftovers of a killed "
        "process: the next batch run removes them")
    gpu_wait_seconds: float = Field(
        default=24 * 3600.0, description="How long a batch flow in workers mode waits for its videos to be generated")
    gang_host: str = Field(default_factory=socket.gethostname,
                           description="This host's name in gang slots and worker records (two hosts must differ)")
    stage_retry_limit: int = Field(
        default=2, description="Re-runs of a stage whose failure was retryable (a timeout, a crash), per "
        "asset and stage, before the failure stands; generation has its own max_generation_attempts")

    @field_validator("data_root", mode="after")
    @classmethod
    def _absolute_root(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("input_roots", mode="after")
    @classmethod
    def _absolute_inputs(cls, value: list[Path]) -> list[Path]:
        return [p.expanduser().resolve() for p in value]

    @property
    def storage(self) -> Storage:
        return Storage(self.data_root)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_root / 'avatarflow.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call `get_settings.cache_clear()` after changing env."""
    return Settings()
