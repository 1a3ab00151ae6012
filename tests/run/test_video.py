"""Pictures and videos: rollax's Gymnasium envs draw `rgb_array` frames identical to
Gymnasium's own env in the same state; `record_video` writes MP4 (the `video` extra) or GIF
files whose frames read back one per step; `rollax eval --video`; missing libraries and
unsupported requests are ValueErrors saying what to do."""

import importlib.util
import os
import tempfile
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("ROLLAX_CACHE_DIR", str(Path(tempfile.gettempdir()) / "rollax-test-cache"))

pytest.importorskip("pygame", reason="Gymnasium draws classic control with pygame (the video extra)")

from test_agent import preset, train_in

import rollax
from rollax.cli import main
from rollax.run import video


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_in(tmp_path_factory.mktemp("video"), preset("cartpole"))[1]


def gymnasium_frame(gym_id: str, state: np.ndarray) -> np.ndarray:
    """Gymnasium's own picture of `state`."""
    env = gymnasium.make(gym_id, render_mode="rgb_array")
    env.reset(seed=0)
    env.unwrapped.state = state
    try:
        return env.render()
    finally:
        env.close()


def acrobot_state(obs: np.ndarray) -> np.ndarray:
    """Acrobot's observation is (cos, sin) of both angles and the two velocities."""
    return np.array([np.arctan2(obs[1], obs[0]), np.arctan2(obs[3], obs[2]), obs[4], obs[5]])


@pytest.mark.parametrize(("gym_id", "state_of"), [("CartPole-v1", np.asarray),
                                                  ("Acrobot-v1", acrobot_state)])
def test_frames_are_gymnasiums_own_pictures(gym_id, state_of):
    """After a reset and a few steps, the frame is what Gymnasium draws for the state the
    observation reports."""
    env = gymnasium.make(f"rollax/{gym_id}", render_mode="rgb_array")
    obs, _ = env.reset(seed=3)
    for _ in range(5):
        obs, *_ = env.step(env.action_space.sample())
    frame = env.render()
    env.close()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.std() > 0
    np.testing.assert_array_equal(frame, gymnasium_frame(gym_id, state_of(obs.astype(np.float64))))


def test_render_modes_it_cannot_draw_are_refused():
    """'human' is Gymnasium's own window over 'rgb_array' frames (its HumanRendering wrapper)."""
    from rollax.envs.gymnasium_adapter import RollaxGymnasiumEnv

    with pytest.raises(ValueError, match="render_mode 'ansi' is not supported for 'CartPole-v1'"):
        RollaxGymnasiumEnv("CartPole-v1", render_mode="ansi")
    with pytest.raises(ValueError, match="render_mode 'rgb_array' is not supported for 'rollax/"):
        gymnasium.make("rollax/ProbeConstant-v0", render_mode="rgb_array")
    env = gymnasium.make("rollax/CartPole-v1")
    env.reset(seed=0)
    assert env.unwrapped.render() is None  # no render_mode: nothing drawn


def test_missing_pygame_says_what_to_install(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "pygame" else find_spec(name, *args))
    with pytest.raises(ValueError, match=r"needs pygame.*pip install 'rollax\[video\]'"):
        gymnasium.make("rollax/CartPole-v1", render_mode="rgb_array")
    assert gymnasium.make("rollax/CartPole-v1").unwrapped.metadata["render_modes"] == []


def greedy_episode(run_dir, env_id):
    """The reset frame and the step count of one greedy episode of the run's agent, played in
    Gymnasium's `env_id` as the video records it."""
    agent = rollax.load_agent(run_dir, checkpoint="last")
    env = gymnasium.make(env_id, render_mode="rgb_array")
    observation, _ = env.reset(seed=agent.seed)
    first, steps, done = env.render(), 0, False
    while not done:
        observation, _, terminated, truncated, _ = env.step(agent.predict(observation)[0])
        steps, done = steps + 1, terminated or truncated
    return first, steps


def test_gif_has_one_frame_per_step_starting_at_the_reset(run_dir, tmp_path):
    path, frames = rollax.record_video(run_dir, tmp_path / "a.gif", checkpoint="last")
    first, steps = greedy_episode(run_dir, "rollax/CartPole-v1")
    assert path == tmp_path / "a.gif" and frames == steps + 1
    with Image.open(path) as gif:
        # Pillow merges identical consecutive frames into one longer frame
        assert 2 <= gif.n_frames <= frames
        np.testing.assert_array_equal(np.asarray(gif.convert("RGB")), first)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


@pytest.mark.filterwarnings("ignore:os.fork")  # imageio's ffmpeg reader: fork + exec
def test_mp4_reads_back_every_frame(run_dir, tmp_path):
    imageio = pytest.importorskip("imageio.v3")
    pytest.importorskip("imageio_ffmpeg")
    path, frames = rollax.record_video(run_dir, tmp_path / "b.mp4", checkpoint="last")
    movie = imageio.imread(path)
    assert movie.shape == (frames, 400, 600, 3)


def test_folder_without_the_extra_gets_a_gif_and_mp4_says_what_to_install(run_dir, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(video, "_has_mp4", lambda: False)
    path, _ = rollax.record_video(run_dir, tmp_path)
    assert path == tmp_path / "tiny_cartpole_seed0.gif" and path.stat().st_size > 0
    with pytest.raises(ValueError, match=r"\.mp4 needs imageio and imageio-ffmpeg: pip install "
                                         r"'rollax\[video\]', or ask for a \.gif"):
        rollax.record_video(run_dir, tmp_path / "c.mp4")
    with pytest.raises(ValueError, match=r"video .*c\.avi: name a \.mp4 or \.gif file, or a folder"):
        rollax.record_video(run_dir, tmp_path / "c.avi")
    with pytest.raises(ValueError, match="episodes must be an int >= 1, got 0"):
        rollax.record_video(run_dir, tmp_path / "c.gif", episodes=0)


def test_eval_cli_records_a_video(run_dir, tmp_path, capsys):
    out = tmp_path / "eval.gif"
    assert main(["eval", str(run_dir), "--episodes", "1", "--video", str(out)]) == 0
    assert f"wrote {out} (" in capsys.readouterr().out and out.stat().st_size > 0
    assert main(["eval", str(run_dir), "--episodes", "1", "--video", str(out), "--seed", "5"]) == 2
    assert "seed=5 is not a seed of" in capsys.readouterr().err
    assert main(["eval", str(run_dir), "--video", str(tmp_path / "x.avi")]) == 2
    printed = capsys.readouterr()
    assert printed.out == "" and "name a .mp4 or .gif file" in printed.err  # before evaluating


def test_gymnasium_run_is_filmed_in_its_own_env(tmp_path):
    """A `gymnasium:CartPole-v1` run: Gymnasium's CartPole drawn by Gymnasium itself."""
    run_dir = train_in(tmp_path, preset("gymnasium_cartpole"))[1]
    path, frames = rollax.record_video(run_dir, tmp_path / "host.gif", checkpoint="last")
    first, steps = greedy_episode(run_dir, "CartPole-v1")
    assert frames == steps + 1
    with Image.open(path) as gif:
        np.testing.assert_array_equal(np.asarray(gif.convert("RGB")), first)
