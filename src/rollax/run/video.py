"""Videos of a trained agent (`rollax eval RUN --video out.mp4`).

Classic-control envs (gymnax ids through rollax's Gymnasium adapter, and `gymnasium:<id>` runs)
play greedy episodes in a Gymnasium env made with `render_mode="rgb_array"`, driven by
`Agent.predict`; an env whose batch source draws pictures of its samples has no episodes to
watch, so its video is the run's sample grids over training (`seed_<k>/images/samples_*.png`,
one frame per picture, in step order), or, when its source films its samples being made (a
chain of steps: `BatchSource.film`), the trained policy's samples from start to end.
MP4 needs the `video` extra (imageio + imageio-ffmpeg, which ships its own ffmpeg); GIF is
written with Pillow, which matplotlib already brings.
"""

from __future__ import annotations

import importlib.util
import os
import re
import warnings
from pathlib import Path

import gymnasium
import jax
import numpy as np
from PIL import Image

from rollax.envs.gymnasium_ids import is_host_env_id
from rollax.envs.registry import gymnasium_id
from rollax.envs.render import can_render, prepare_pygame
from rollax.logging.logger import image_grid
from rollax.rollout.host_collector import DEFAULT_EVAL_EPISODE_STEPS
from rollax.run.agent import Agent, load_agent
from rollax.run.run_folder import find_run

FORMATS = (".mp4", ".gif")
_STEP = re.compile(r"_(\d+)\.png$")


def record_video(run_dir: str | Path, out: str | Path, *, episodes: int = 1,
                 seed: int | None = None, checkpoint: str = "best") -> tuple[Path, int]:
    """Write a video of `load_agent(run_dir, seed, checkpoint)` to `out` (`.mp4`, `.gif`, or
    a folder: `<experiment>_seed<k>.mp4`, `.gif` without the `video` extra). Returns the
    file's path and its number of frames."""
    if not isinstance(episodes, int) or isinstance(episodes, bool) or episodes < 1:
        raise ValueError(f"episodes must be an int >= 1, got {episodes!r}")
    out = Path(out)
    check_output(out)
    agent = load_agent(run_dir, seed, checkpoint)
    if out.suffix not in FORMATS:
        out = out / f"{agent.experiment.name}_seed{agent.seed}{'.mp4' if _has_mp4() else '.gif'}"
    film = None if agent.source is None else agent.source.film(agent.model, jax.random.key(agent.seed))
    if film is not None:  # the samples being made, stage by stage
        frames, fps = [_frame(pictures) for pictures in np.asarray(film)], 3
    elif agent.source is not None and agent.source.shows_images:
        frames, fps = _sample_grids(Path(run_dir), agent), 1
    else:
        frames, fps = _episodes(agent, episodes)
    return write_frames(frames, out, fps), len(frames)


def check_output(out: Path) -> None:
    """ValueError for a video path that cannot be written (an unknown format, or MP4 without
    the `video` extra), before anything runs."""
    if out.suffix not in FORMATS and (out.suffix or out.is_file()) and not out.is_dir():
        raise ValueError(f"video {out}: name a .mp4 or .gif file, or a folder")
    if out.suffix == ".mp4":
        _check_mp4()
    existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not os.access(existing if existing.is_dir() else existing.parent, os.W_OK):
        raise PermissionError(f"video {out}: {existing} is read-only")


def _episodes(agent: Agent, episodes: int) -> tuple[list[np.ndarray], float]:
    """Frames of `episodes` greedy episodes (the first after reset, one per step)."""
    env = _rendering_env(agent)
    frames = []
    try:
        for episode in range(episodes):
            observation, _ = env.reset(seed=agent.seed + episode)
            frames.append(env.render())
            done, steps = False, 0
            while not done:
                action, _ = agent.predict(observation)
                observation, _, terminated, truncated, _ = env.step(action)
                frames.append(env.render())
                steps += 1
                done = terminated or truncated or steps >= DEFAULT_EVAL_EPISODE_STEPS
            if not (terminated or truncated):
                warnings.warn(f"video episode {episode} of {agent.experiment.env.id!r} ran "
                              f"{steps} steps without ending and was cut there", RuntimeWarning,
                              stacklevel=2)
        return frames, env.metadata.get("render_fps") or 30
    finally:
        env.close()


def _rendering_env(agent: Agent) -> gymnasium.Env:
    spec = agent.experiment.env
    if is_host_env_id(spec.id):
        prepare_pygame(f"a video of {spec.id}")  # most Gymnasium envs draw with it
        env = gymnasium.make(agent.env.spec, render_mode="rgb_array")  # the agent's env, drawn
    elif can_render(spec.id):
        env = gymnasium.make(gymnasium_id(spec.id), render_mode="rgb_array", **spec.params,
                             **spec.kwargs)
    else:
        raise ValueError(f"env {spec.id!r} cannot be drawn: videos show the classic-control envs, "
                         "Gymnasium envs that render 'rgb_array', and the pictures of sampled envs")
    if env.render_mode != "rgb_array":
        env.close()
        raise ValueError(f"env {spec.id!r} does not render 'rgb_array' frames")
    return env


def _sample_grids(run_dir: Path, agent: Agent) -> list[np.ndarray]:
    """The seed's sample-grid pictures written during training, oldest first."""
    seed_dir = f"seed_{agent.seed}"
    folder = run_dir if run_dir.name == seed_dir else find_run(run_dir) / seed_dir
    paths = sorted(folder.glob("images/samples_*.png"),
                   key=lambda p: int(m[1]) if (m := _STEP.search(p.name)) else -1)
    if not paths:
        raise ValueError(f"{folder} has no sample pictures (images/samples_*.png): the run was "
                         "trained with [logging] images = false")
    frames = []
    for path in paths:
        with Image.open(path) as image:
            frames.append(np.asarray(image.convert("RGB")))
    return frames


def _frame(pictures: np.ndarray, scale: int = 4) -> np.ndarray:
    """Pictures `[B, H, W]` in [0, 1] as one `uint8 [H', W', 3]` frame, each pixel `scale`
    times larger (8x8 digits are too small to watch)."""
    grid = np.round(image_grid(pictures) * 255).astype(np.uint8)
    return np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)


def _has_mp4() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("imageio", "imageio_ffmpeg"))


def _check_mp4() -> None:
    if not _has_mp4():
        raise ValueError("writing .mp4 needs imageio and imageio-ffmpeg: pip install "
                         "'rollax[video]', or ask for a .gif (written with Pillow)")


def write_frames(frames: list[np.ndarray], path: Path, fps: float) -> Path:
    """Write `uint8 [H, W, 3]` frames as an MP4 or a GIF; atomic (a temporary file renamed),
    so a failed write leaves no half video."""
    if not frames:
        raise ValueError(f"no frames to write to {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        if path.suffix == ".gif":
            images = [Image.fromarray(frame) for frame in frames]
            images[0].save(tmp, save_all=True, append_images=images[1:],
                           duration=round(1000 / fps), loop=0)
        else:
            _check_mp4()
            import imageio.v2 as imageio

            with warnings.catch_warnings():
                # JAX warns of any fork; imageio-ffmpeg's is subprocess's fork + exec of ffmpeg
                warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
                # an even size for H.264's 4:2:0 colour; Gymnasium's frames are even already
                imageio.mimwrite(tmp, frames, fps=fps, macro_block_size=2)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
