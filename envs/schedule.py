"""The continual schedule: which game the agent trains on at each training frame.

Kirkpatrick et al. (2017) draw 10 games at random from a pool of 19 on which a standalone DQN
reaches human level, then train on them "for extended periods" in random order with games
recurring. The pool is shown only in a figure and visit lengths are not given, so both are
choices of this package, documented here.

The pool, `DQN_HUMAN_LEVEL_POOL`. Criterion: the 19 games with the highest human-normalised score
of the Nature DQN (Mnih et al. 2015, Extended Data Table 2; `envs.scores.NATURE_DQN`), normalised
with the dqn_zoo random/human table this package scores with (`envs.scores`), so that a standalone
DQN reaches 1 on every pool game in the very metric we report. Per game, normalised DQN score
(x human):

     1 VideoPinball  18.73      8 Atlantis      4.50     15 FishingDerby  1.72
     2 Breakout      13.87      9 CrazyClimber  4.12     16 TimePilot     1.43
     3 Assault        6.04     10 Gopher        3.83     17 Tennis        1.37
     4 StarGunner     5.98     11 RoadRunner    2.33     18 SpaceInvaders 1.20
     5 Boxing         5.98     12 Kangaroo      2.24     19 Tutankham     1.12
     6 DemonAttack    5.26     13 Krull         2.07
     7 Robotank       5.09     14 Jamesbond     2.00

Three more games also reach human level and fall just outside the 19: Pong 1.12 (1.1218 against
Tutankham's 1.1223), KungFuMaster 1.02, Freeway 1.02. Under the Nature paper's own human/random
numbers the ranking differs (e.g. BeamRider 1.20 there, 0.39 here; FishingDerby 0.94 there), which
is why we normalise with the table we score with. Pass `pool=` to use another.

MinAtar's pool (`MINATAR_POOL`) is its five games.

Visit order. With `order="random"` the schedule is a sequence of rounds; each round is a fresh
random permutation of the games, re-drawn while its first game equals the previous round's last
game. Hence: every game is visited once before any recurs, each game is visited exactly
`visits_per_game` times, and no game follows itself. With `order="given"` the explicit `games`
are visited in the given order, cycled `visits_per_game` times.

The task label of a visit is the index of its game in `Schedule.games`, which lists the games in
order of first visit (task 0 is trained first). The schedule holds no mutable state: the visit for
any training frame is a pure function of the global frame counter (`Schedule.visit_at`).

Units: all frame counts are emulator frames (Atari: 4 per agent step at action repeat 4; MinAtar:
1 per agent step, it has no frame skip).
"""

from __future__ import annotations

import bisect
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np

from envs.games import MINATAR_GAMES, resolve_game
from ewc_dqn.errors import UserError

DQN_HUMAN_LEVEL_POOL: tuple[str, ...] = (
    "VideoPinball",
    "Breakout",
    "Assault",
    "StarGunner",
    "Boxing",
    "DemonAttack",
    "Robotank",
    "Atlantis",
    "CrazyClimber",
    "Gopher",
    "RoadRunner",
    "Kangaroo",
    "Krull",
    "Jamesbond",
    "FishingDerby",
    "TimePilot",
    "Tennis",
    "SpaceInvaders",
    "Tutankham",
)
"""19 Atari games on which the Nature DQN reaches human level, ranked (see module docstring)."""

MINATAR_POOL: tuple[str, ...] = MINATAR_GAMES
"""The five MinAtar games."""

_JSON_VERSION = 1


def _canonical_names(names: tuple[str, ...], what: str) -> tuple[str, ...]:
    """Resolve names; reject duplicates and mixed suites (one-line UserErrors)."""
    specs = [resolve_game(name) for name in names]
    canonical = tuple(spec.name for spec in specs)
    duplicates = sorted({name for name in canonical if canonical.count(name) > 1})
    if duplicates:
        raise UserError(f"{what} lists a game more than once: {', '.join(duplicates)}")
    if len({spec.suite for spec in specs}) > 1:
        raise UserError(f"{what} mixes Atari and MinAtar games: {', '.join(canonical)}")
    return canonical


@dataclass(frozen=True)
class ScheduleConfig:
    """How to choose and order the games of one continual-learning run."""

    games: tuple[str, ...] = ()
    """Explicit games (any accepted spelling); empty = draw `num_games` from `pool`."""
    num_games: int = 10
    """Games drawn from `pool` (count); used only when `games` is empty."""
    pool: tuple[str, ...] = DQN_HUMAN_LEVEL_POOL
    """Games to draw from when `games` is empty."""
    order: Literal["random", "given"] = "random"
    """'random': random rounds, no back-to-back repeats; 'given': cycle `games` as listed."""
    visits_per_game: int = 3
    """Times each game is visited (count)."""
    visit_frames: int = 20_000_000
    """Length of one visit (emulator frames). Default 20M = 5M agent steps, the paper's delay
    before a task's EWC penalty becomes active, so each penalty is active after its first visit.
    Unused when `budget_frames` is set."""
    budget_frames: int = 0
    """Training budget of the whole run (emulator frames). 0: games x visits_per_game x
    visit_frames. Above 0 it sets the visit length instead, budget_frames / (games x
    visits_per_game), which must come out whole."""
    seed: int = field(default=0, metadata={"not_a_variant": True})
    """Seed of the game draw and the visit order (same seed, same schedule)."""

    def __post_init__(self) -> None:
        # tyro and json hand over lists; keep the frozen value hashable.
        object.__setattr__(self, "games", tuple(self.games))
        object.__setattr__(self, "pool", tuple(self.pool))

    def validate(self) -> None:
        """Raise UserError (one line) for a schedule that cannot be built.

        Not run at construction: the command line parses first and then reports any error as one
        line (tyro would box an error raised while it builds the config)."""
        for name in ("num_games", "visits_per_game", "visit_frames", "budget_frames"):
            value = getattr(self, name)
            lowest = 0 if name == "budget_frames" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
                raise UserError(f"ScheduleConfig.{name} must be an int >= {lowest}, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise UserError(f"ScheduleConfig.seed must be a non-negative int, got {self.seed!r}")
        if self.order not in ("random", "given"):
            raise UserError(f"ScheduleConfig.order must be 'random' or 'given', got {self.order!r}")
        if self.games:
            _canonical_names(self.games, "ScheduleConfig.games")
        else:
            if self.order == "given":
                raise UserError("ScheduleConfig.order='given' needs explicit games")
            pool = _canonical_names(self.pool, "ScheduleConfig.pool")
            if self.num_games > len(pool):
                raise UserError(
                    f"ScheduleConfig.num_games={self.num_games} exceeds the pool's "
                    f"{len(pool)} games"
                )
        if self.num_selected_games < 2:
            raise UserError(
                f"a continual schedule needs at least 2 games, got {self.num_selected_games}"
            )
        if self.budget_frames % self.num_visits:
            low = self.budget_frames // self.num_visits * self.num_visits
            raise UserError(
                f"ScheduleConfig.budget_frames={self.budget_frames:,} does not split into "
                f"{self.num_visits} equal visits ({self.num_selected_games} games x "
                f"{self.visits_per_game}); try {low:,} or {low + self.num_visits:,}"
            )

    @property
    def num_selected_games(self) -> int:
        """Games in the schedule: len(games) if given, else num_games."""
        return len(self.games) if self.games else self.num_games

    @property
    def num_visits(self) -> int:
        """Visits in the schedule: games x visits_per_game."""
        return self.num_selected_games * self.visits_per_game

    @property
    def frames_per_visit(self) -> int:
        """Length of each visit (emulator frames): from `budget_frames` when set, else
        `visit_frames`."""
        return self.budget_frames // self.num_visits if self.budget_frames else self.visit_frames

    @property
    def total_frames(self) -> int:
        """Training budget (emulator frames) = games x visits_per_game x frames_per_visit."""
        return self.num_visits * self.frames_per_visit

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values."""
        d = asdict(self)
        d["games"], d["pool"] = list(self.games), list(self.pool)
        return d


@dataclass(frozen=True)
class Visit:
    """One stretch of training on one game."""

    index: int
    """Position in the schedule (0-based)."""
    game: str
    """Canonical game name."""
    task: int
    """True task label: index of `game` in `Schedule.games`."""
    start_frame: int
    """Global training frame at which the visit starts (emulator frames)."""
    frames: int
    """Length (emulator frames)."""

    @property
    def end_frame(self) -> int:
        """First frame after the visit (exclusive)."""
        return self.start_frame + self.frames


@dataclass(frozen=True)
class Schedule:
    """The games of a run and the visits, back to back from frame 0."""

    games: tuple[str, ...]
    """Canonical names in order of first visit; a game's index is its task label."""
    visits: tuple[Visit, ...]
    """Visits in training order."""
    config: ScheduleConfig | None = None
    """The config that built it (None if built by hand)."""

    def __post_init__(self) -> None:
        self.check_valid()

    def check_valid(self) -> None:
        """Raise ValueError unless visits tile [0, total_frames) and labels match `games`."""
        if len(set(self.games)) != len(self.games):
            raise ValueError(f"Schedule.games has duplicates: {self.games}")
        if not self.visits:
            raise ValueError("Schedule has no visits")
        frame = 0
        for i, visit in enumerate(self.visits):
            if visit.index != i or visit.start_frame != frame or visit.frames <= 0:
                raise ValueError(f"visit {i} does not follow visit {i - 1} back to back: {visit}")
            if visit.game not in self.games or self.games[visit.task] != visit.game:
                raise ValueError(f"visit {i} has game {visit.game!r} with task {visit.task}")
            frame = visit.end_frame
        first_visits = tuple(dict.fromkeys(v.game for v in self.visits))
        if first_visits != self.games:
            raise ValueError("Schedule.games must list every visited game in order of first visit")

    @cached_property
    def _start_frames(self) -> tuple[int, ...]:
        return tuple(visit.start_frame for visit in self.visits)

    @property
    def total_frames(self) -> int:
        """Frames of all visits (emulator frames)."""
        return self.visits[-1].end_frame

    def visit_at(self, frame: int) -> tuple[Visit, int]:
        """The visit containing training frame `frame`, and the frames already played in it.

        Raises:
            ValueError: `frame` is outside [0, total_frames).
        """
        if not 0 <= frame < self.total_frames:
            raise ValueError(f"frame {frame} is outside the schedule [0, {self.total_frames})")
        visit = self.visits[bisect.bisect_right(self._start_frames, frame) - 1]
        return visit, frame - visit.start_frame

    def to_json(self) -> str:
        """JSON text that `from_json` reads back into an equal Schedule."""
        return json.dumps(
            {
                "version": _JSON_VERSION,
                "config": None if self.config is None else self.config.to_dict(),
                "games": list(self.games),
                "visits": [asdict(visit) for visit in self.visits],
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        """Inverse of `to_json`; validates the result."""
        data = json.loads(text)
        if data.get("version") != _JSON_VERSION:
            raise ValueError(f"unsupported schedule JSON version {data.get('version')!r}")
        config = None if data["config"] is None else ScheduleConfig(**data["config"])
        return cls(
            games=tuple(data["games"]),
            visits=tuple(Visit(**visit) for visit in data["visits"]),
            config=config,
        )

    def describe(self) -> str:
        """Printable table of the visits."""
        lines = [
            f"{len(self.games)} games, {len(self.visits)} visits, "
            f"{self.total_frames:,} frames in all",
            f"{'visit':>5}  {'game':<22} {'task':>4}  {'start frame':>15}  {'end frame':>15}",
        ]
        for v in self.visits:
            lines.append(
                f"{v.index:>5}  {v.game:<22} {v.task:>4}  {v.start_frame:>15,}  {v.end_frame:>15,}"
            )
        return "\n".join(lines)


def _random_rounds(num_games: int, rounds: int, rng: np.random.Generator) -> list[int]:
    """Game indices: `rounds` permutations, none starting with the previous one's last game."""
    order: list[int] = []
    for _ in range(rounds):
        perm = [int(i) for i in rng.permutation(num_games)]
        while order and perm[0] == order[-1]:
            perm = [int(i) for i in rng.permutation(num_games)]
        order.extend(perm)
    return order


def build_schedule(config: ScheduleConfig) -> Schedule:
    """Draw the games and order the visits (see module docstring). Deterministic in config.seed."""
    config.validate()
    rng = np.random.default_rng(config.seed)
    if config.games:
        drawn = _canonical_names(config.games, "ScheduleConfig.games")
    else:
        pool = _canonical_names(config.pool, "ScheduleConfig.pool")
        drawn = tuple(pool[int(i)] for i in rng.choice(len(pool), config.num_games, replace=False))
    if config.order == "given":
        order = list(range(len(drawn))) * config.visits_per_game
    else:
        order = _random_rounds(len(drawn), config.visits_per_game, rng)
    games = tuple(dict.fromkeys(drawn[i] for i in order))
    task = {game: i for i, game in enumerate(games)}
    visits = tuple(
        Visit(
            index=k,
            game=drawn[i],
            task=task[drawn[i]],
            start_frame=k * config.frames_per_visit,
            frames=config.frames_per_visit,
        )
        for k, i in enumerate(order)
    )
    return Schedule(games=games, visits=visits, config=config)
