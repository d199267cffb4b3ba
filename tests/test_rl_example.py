"""examples/rl_gridworld.py: a policy net trained by behaviour cloning, explained per action.
The map of the expert's action ("move toward the goal") must peak on the goal or the agent,
the two things the decision depends on, far more often than chance, and not on the distractor."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
import torch

from module_support import load_file  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rl_gridworld.py"


def load() -> ModuleType:
    return load_file(EXAMPLE, "rl_gridworld")


def test_expert_and_rendering_by_hand() -> None:
    rl = load()
    s = rl.State(agent=(1, 1), goal=(5, 2), distractor=(0, 7))
    assert rl.ACTIONS[rl.expert_action(s)] == "right"
    assert rl.ACTIONS[rl.expert_action(rl.State((1, 1), (2, 6), (0, 7)))] == "down"
    f = rl.render(s)
    assert f.shape == (3, 32, 32)
    # the goal cell (x 20..23, y 8..11) holds green pixels, the agent cell blue ones
    goal = f[:, 8:12, 20:24].reshape(3, -1)
    assert (goal[1] > 0.7).any() and (goal[0] < 0.2).any()
    assert (f[:, 4:8, 4:8].reshape(3, -1)[2] > 0.85).all()


def test_action_map_of_the_move_toward_the_goal_peaks_on_goal_or_agent(tmp_path: Path) -> None:
    rl = load()
    net = rl.train()
    states, frames, _ = rl.dataset(200, 1)
    r = rl.peak_counts(net, states, frames)
    assert r["agreement"] > 0.9  # the policy has learned the game
    assert r["goal"] > 10 * r["chance"] and r["goal"] + r["agent"] > 0.75
    assert r["distractor"] < r["goal"] / 3
    # one forward, one backward: the four action maps equal four separate calls
    import camlens

    one = camlens.explain(net, frames[:3], layer=rl.Policy.LAYER, target=2).maps[:, 0]
    torch.testing.assert_close(rl.action_maps(net, frames[:3])[:, 2], one, rtol=1e-5, atol=1e-6)
    path = rl.figure(net, states[:2], frames[:2], tmp_path / "rl.png")
    assert path.is_file()
