"""FAKE single-GPU WanS2V (causal_s2v_pipeline.py of LiveAvatar@9c2c38d), for the warm worker.

Its __init__ and generate take the real keyword arguments (so the worker's signature filter sees
what it would see), record what they were given in FAKE_LIVEAVATAR_RECORD (JSON lines), and
generate like the real pipeline: one tqdm bar over the sampling steps per causal block, the clip
count from the speech's wav2vec frames capped by num_repeat, the first clip 3 frames short, the
size from the image. Like the real one it calls dist.get_rank() in every block, so it fails
without a process group, and it raises the real errors for a fifth step and other solvers.
"""

from __future__ import annotations

import json
import os
import time

import torch.distributed as dist

from ._fake_script import script


class tqdm(script.Bar):
    """tqdm as the real pipeline uses it (`for i, t in enumerate(tqdm(timesteps))`), printing the
    fake's faithful bars; `format_dict["elapsed"]` as tqdm has it."""

    def __init__(self, iterable, *args, **kwargs) -> None:
        self.iterable = list(iterable)
        super().__init__(len(self.iterable))

    @property
    def format_dict(self) -> dict:
        return {"elapsed": time.monotonic() - self.start, "n": self.n, "total": self.total}

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()


class FakeVideo:
    """What generate returns: the real pipeline's video tensor, reduced to its shape."""

    def __init__(self, width: int, height: int, frames: int) -> None:
        self.width, self.height, self.frames = width, height, frames

    def __getitem__(self, item):  # save_video(tensor=video[None], ...)
        return self


def _record(event: str, **data) -> None:
    path = os.environ.get("FAKE_LIVEAVATAR_RECORD")
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps({"event": event, "pid": os.getpid(), **data}, default=str) + "\n")


_UNSET = object()  # tells a keyword the caller passed from one left at its default


class WanS2V:
    def __init__(self, config, checkpoint_dir, device_id=0, rank=0, t5_fsdp=False, dit_fsdp=False,
                 use_sp=False, sp_size=None, t5_cpu=False, init_on_cpu=_UNSET, drop_part_motion_frames=0.3,
                 convert_model_dtype=False, is_training=False, single_gpu=False, offload_kv_cache=False):
        passed = {k: v for k, v in locals().items() if k not in ("self", "config") and v is not _UNSET}
        _record("init", **passed)
        init_on_cpu = True if init_on_cpu is _UNSET else init_on_cpu  # the real default
        script.load_weights(type("Args", (), {"ckpt_dir": checkpoint_dir})(), False)
        time.sleep(float(os.environ.get("FAKE_LIVEAVATAR_LOAD_SECONDS", "0")))
        self.config, self.rank, self.init_on_cpu = config, rank, init_on_cpu
        self.noise_model = object()
        self.kv_cache1 = None

    def add_lora_to_model(self, model, lora_rank=4, lora_alpha=4, lora_target_modules="", init_lora_weights="kaiming",
                          pretrained_lora_path=None, state_dict_converter=None, load_only=False,
                          load_lora_weight_only=False):
        _record("lora", path=pretrained_lora_path, rank=lora_rank, alpha=lora_alpha)
        if not os.path.exists(pretrained_lora_path):
            raise FileNotFoundError(2, "No such file or directory", pretrained_lora_path)
        return model

    def generate(self, input_prompt=None, ref_image_path=None, audio_path=None, enable_tts=False,
                 tts_prompt_audio=None, tts_prompt_text=None, tts_text=None, num_repeat=1, pose_video=None,
                 generate_size=None, max_area=720 * 1280, infer_frames=80, shift=5.0, sample_solver="unipc",
                 sampling_steps=40, guide_scale=5.0, n_prompt="", seed=-1, offload_model=True,
                 init_first_frame=False, use_dataset=False, dataset_sample_idx=0, drop_motion_noisy=False,
                 num_gpus_dit=1, max_repeat=1000000, enable_vae_parallel=False, mask=None,
                 input_video_for_sam2=None, enable_online_decode=False):
        _record("generate", num_repeat=num_repeat, infer_frames=infer_frames, sampling_steps=sampling_steps,
                sample_solver=sample_solver, offload_model=offload_model, seed=seed, max_area=max_area,
                enable_online_decode=enable_online_decode)
        width, height = script.probe_image(ref_image_path)
        size = next(k for k, v in script.MAX_AREA_CONFIGS.items() if v == max_area)
        width, height = script.output_size(width, height, size)
        clips = script.audio_clips(script.audio_samples_16k(audio_path, False), infer_frames)
        if num_repeat is None or num_repeat > clips:
            num_repeat = clips
        print("complete prepare conditional inputs", flush=True)
        if sample_solver != "euler":
            raise NotImplementedError("Unsupported solver.")
        timesteps = list(range(sampling_steps))
        step_seconds = float(os.environ.get("FAKE_LIVEAVATAR_STEP_SECONDS", "0"))
        for _clip in range(num_repeat):
            for _block in range(script.blocks_per_clip(infer_frames)):
                for i, _t in enumerate(tqdm(timesteps)):
                    dist.get_rank()  # the real pipeline: sample_scheduler._step_index = dist.get_rank()
                    if i >= 4:
                        raise KeyError(str(i + 1))  # _move_kv_cache_to_working_gpu: self.kv_cache1[str(moved_id)]
                    time.sleep(step_seconds)
        print("complete full-sequence generation", flush=True)
        return FakeVideo(width, height, script.video_frames(num_repeat, infer_frames, tpp=False)), {}
