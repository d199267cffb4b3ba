"""Grad-CAM for a reinforcement-learning policy (the paper's introduction names RL as a use):
a small policy network (frames in, action logits out) for a grid game, explained per action.

The game: an 8 x 8 grid drawn at 4 pixels per cell (32 x 32 RGB frames). A blue agent must
reach a green goal; a red distractor sprite (harmless, it changes nothing) is drawn too. The
actions are up, down, left and right. The policy net learns by imitation of the scripted
expert "move toward the goal along the axis where it is farther" (behaviour cloning: cross-
entropy on the expert's actions, a few seconds on a CPU), then each action's Grad-CAM map
(at the last convolution, 16 x 16) shows what the decision rests on.

    python examples/rl_gridworld.py --out rl_out      # trains, explains, writes rl_gridworld.png

What a competent policy should show: the map of the action "move toward the goal" puts its
maximum near the goal (or the agent, the other thing the decision depends on), not on the
distractor. :func:`peak_counts` counts where the maxima fall (tests/test_rl_example.py).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import camlens

GRID, CELL = 8, 4
SIZE = GRID * CELL
ACTIONS = ("up", "down", "left", "right")
MOVES = {0: (0, -1), 1: (0, 1), 2: (-1, 0), 3: (1, 0)}  # (dx, dy) per action
COLOURS = {"agent": (40, 90, 230), "goal": (40, 200, 70), "distractor": (220, 50, 40)}
BACKGROUND = (235, 235, 225)


@dataclass(frozen=True)
class State:
    """Cell (x, y) of the agent, the goal and the distractor (all distinct)."""

    agent: tuple[int, int]
    goal: tuple[int, int]
    distractor: tuple[int, int]


def random_state(rng: np.random.Generator) -> State:
    """Three distinct cells, agent not on the goal."""
    cells = rng.choice(GRID * GRID, size=3, replace=False)
    a, g, d = ((int(c) % GRID, int(c) // GRID) for c in cells)
    return State(a, g, d)


def render(s: State) -> np.ndarray:
    """The frame (3, 32, 32) float32 in [0, 1]: background, then the three sprites (each
    fills its cell less a 1-pixel border: an agent square, a goal disk, a distractor cross)."""
    img = np.empty((SIZE, SIZE, 3), np.float32)
    img[:] = np.array(BACKGROUND) / 255
    yy, xx = np.mgrid[0:CELL, 0:CELL] - (CELL - 1) / 2
    shapes = {"agent": np.abs(xx).clip(0) <= 1.5,
              "goal": xx ** 2 + yy ** 2 <= 2.3,
              "distractor": (np.abs(xx) < 0.6) | (np.abs(yy) < 0.6)}
    for name in ("distractor", "goal", "agent"):
        x, y = getattr(s, name)
        tile = img[y * CELL:(y + 1) * CELL, x * CELL:(x + 1) * CELL]
        tile[shapes[name] & (np.abs(yy) <= 1.5)] = np.array(COLOURS[name]) / 255
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def expert_action(s: State) -> int:
    """Move toward the goal along the axis where it is farther (ties: horizontally)."""
    dx, dy = s.goal[0] - s.agent[0], s.goal[1] - s.agent[1]
    if abs(dx) >= abs(dy):
        return 3 if dx > 0 else 2
    return 1 if dy > 0 else 0


def sprite_mask(s: State, name: str) -> np.ndarray:
    """(32, 32) bool: the cell of sprite ``name``."""
    m = np.zeros((SIZE, SIZE), bool)
    x, y = getattr(s, name)
    m[y * CELL:(y + 1) * CELL, x * CELL:(x + 1) * CELL] = True
    return m


class Policy(nn.Module):
    """Frames (B, 3, 32, 32) -> action logits (B, 4): conv-ReLU-pool (16 x 16), conv-ReLU
    (its ReLU ``features.4`` is Grad-CAM's layer, 16 x 16), a fully-connected head that keeps
    where things are (flatten, 64 hidden units)."""

    LAYER = "features.4"

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16 * 16, 64), nn.ReLU(),
                                  nn.Linear(64, len(ACTIONS)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def dataset(n: int, seed: int) -> tuple[list[State], torch.Tensor, torch.Tensor]:
    """n random states, their frames (n, 3, 32, 32) and the expert's actions (n,)."""
    rng = np.random.default_rng(seed)
    states = [random_state(rng) for _ in range(n)]
    x = torch.from_numpy(np.stack([render(s) for s in states]))
    y = torch.tensor([expert_action(s) for s in states])
    return states, x, y


def train(n: int = 4000, steps: int = 600, seed: int = 0) -> Policy:
    """Behaviour cloning of :func:`expert_action` (Adam, batch 64)."""
    torch.manual_seed(seed)
    _, x, y = dataset(n, seed)
    net = Policy()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, n, (64,), generator=g)
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def action_maps(net: Policy, frames: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of every action, (B, 4, 32, 32) in [0, 1], from one forward and one backward."""
    ex = camlens.explain(net, frames, layer=Policy.LAYER, target=torch.tensor([[0, 1, 2, 3]]))
    return ex.maps


def peak_counts(net: Policy, states: list[State], frames: torch.Tensor) -> dict[str, float]:
    """Where the maximum of the map of the expert's action ("move toward the goal") falls:
    the share of frames with it in the goal's cell, the agent's, the distractor's; ``chance``
    is one cell's share of the image (1/64). Also the policy's agreement with the expert."""
    maps = action_maps(net, frames)
    expert = [expert_action(s) for s in states]
    with torch.no_grad():
        agree = float((net(frames).argmax(1) == torch.tensor(expert)).float().mean())
    hits = {"goal": 0, "agent": 0, "distractor": 0}
    for s, m, a in zip(states, maps, expert):
        i = int(m[a].argmax())
        y, x = divmod(i, SIZE)
        for name in hits:
            hits[name] += bool(sprite_mask(s, name)[y, x])
    n = len(states)
    return {**{k: v / n for k, v in hits.items()}, "chance": 1 / GRID ** 2,
            "agreement": agree, "n": n}


def figure(net: Policy, states: list[State], frames: torch.Tensor, path: Path) -> Path:
    """rl_gridworld.png: per frame, the frame and the Grad-CAM map of each action (the
    policy's probability above it, the expert's action starred)."""
    from PIL import Image

    from camlens import viz

    maps = action_maps(net, frames)
    with torch.no_grad():
        probs = net(frames).softmax(1)
    rows = []
    for s, f, m, p in zip(states, frames, maps, probs):
        photo = Image.fromarray((f.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        photo = photo.resize((128, 128), Image.Resampling.NEAREST)
        best = expert_action(s)
        rows.append(viz.Row(
            "  ".join(f"{'*' if a == best else ''}{ACTIONS[a]} p={float(p[a]):.2f}"
                      for a in range(4)),
            {"image": photo, **{ACTIONS[a]: viz.overlay(photo, m[a].numpy())
                                for a in range(4)}}))
    cols = [("image", "frame")] + [(a, f"Grad-CAM: {a}") for a in ACTIONS]
    grid = viz.figure1(photo, rows, columns=cols, panel_height=128)
    path.parent.mkdir(parents=True, exist_ok=True)
    viz.save_png(grid, path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="rl_out")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    net = train(seed=a.seed)
    states, frames, _ = dataset(300, a.seed + 1)
    print(peak_counts(net, states, frames))
    print(figure(net, states[:4], frames[:4], Path(a.out) / "rl_gridworld.png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
