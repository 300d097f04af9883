"""The wrong agents a reviewer tried first, wrong baselines and wrong checkpoints: does the suite
fail for each?

    python tools/named_mutants.py                 # each mutant against the tests that guard it
    python tools/named_mutants.py --suite         # each mutant against all of tests/ (slow)
    python tools/named_mutants.py --only target-never-synced

``tools/mutants.py`` makes small syntactic mutants of one module at a time and runs that module's
unit tests. The changes below are the other kind: each breaks the *algorithm* (what the agent
learns or what the run reports) in the training loop and the agent's rules, where a unit test of
one module cannot see it. Each is an exact text substitution in a scratch copy of the repository
(the working tree is never touched), and the tests that should notice run against it in a fresh
interpreter. The report names every failing test, so a mutant that survives says which behaviour
has no guard.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from mutants import scratch_copy  # tools/ is on the path as the script's folder (and in pytest)

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class NamedMutant:
    name: str
    what: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    """The test files (or node ids) expected to fail; ``--suite`` runs all of tests/ instead."""


LEARNING = "tests/test_learning_rules.py"
L2 = "tests/test_ewc.py::test_l2_penalty_is_uniform_anchored_per_task_and_replaced_on_recurrence"
L2_GAINS = "tests/test_ewc.py::test_l2_penalty_ignores_the_per_task_gains_and_biases"
L2_LAM = "tests/test_ewc.py::test_l2_strength_is_its_own_field"
MIXED = "tests/test_rehearsal.py::test_a_mixed_update_is_the_mean_loss_of_each_sample_with_its_task"
COMPOSITION = (
    "tests/test_rehearsal.py::"
    "test_a_quarter_of_the_batch_comes_from_the_other_tasks_in_proportion_to_their_replays"
)
RESUME = "tests/test_train_e2e.py::test_l2_and_rehearsal_resume_gives_identical_weights"
LEGACY = "tests/test_compare.py::test_configs_from_before_consolidation_group_with_their_method"
CKPT = "tests/test_checkpoint.py::"
ONLY_NEW = CKPT + "test_a_checkpoint_writes_only_the_chunks_written_since_the_last"
GC = CKPT + "test_garbage_collection_keeps_every_chunk_a_kept_checkpoint_refers_to"
GC_UNREADABLE = CKPT + "test_a_kept_checkpoint_whose_state_cannot_be_read_stops_garbage_collection"
FAILED_SAVE = CKPT + "test_a_failed_save_removes_its_new_chunks_and_leaves_the_others"
KILLED_SAVE = CKPT + "test_a_save_killed_before_its_rename_is_cleaned_up_by_the_next"
DAMAGED_CHUNK = CKPT + "test_a_damaged_chunk_fails_its_checkpoint_in_one_line"
FORMAT_1 = CKPT + "test_a_format_1_checkpoint_with_its_arrays_inline_still_loads"
REWRITTEN = CKPT + "test_a_damaged_chunk_is_written_again_not_referred_to_again"
REPLAY_DIGESTS = (
    "tests/test_replay.py::"
    "test_chunked_frames_are_the_frames_and_only_written_chunks_are_hashed_again"
)
REPLAY_ADOPTED = (
    "tests/test_checkpoint.py::"
    "test_a_replay_loaded_from_chunks_hashes_only_what_it_writes_afterwards"
)
REPLAY_OTHER_CHUNKS = (
    "tests/test_checkpoint.py::test_frames_loaded_in_other_chunks_are_hashed_at_the_next_save"
)
EWC_ADOPTED = "tests/test_checkpoint.py::test_ewc_terms_loaded_from_chunks_are_not_hashed_again"
REPLAY_LOADED = "tests/test_replay.py::test_a_state_loads_and_its_digests_start_afresh"
EWC_DIGESTS = (
    "tests/test_ewc.py::test_chunked_state_goes_through_a_checkpoint_and_hashes_each_term_once"
)

MUTANTS = (
    NamedMutant(
        "penalty-not-passed",
        "the training loop never hands the EWC penalty to the update",
        "ewc_dqn/train.py",
        "penalty = self.ewc.penalty if self.ewc is not None else None",
        "penalty = None",
        (LEARNING,),
    ),
    NamedMutant(
        "penalty-not-in-loss",
        "the penalty is computed and logged but never added to the loss",
        "ewc_dqn/agent.py",
        "total = loss if extra is None else loss + extra",
        "total = loss",
        (LEARNING,),
    ),
    NamedMutant(
        "frames-not-counted-for-ewc",
        "the frames a task trains are never counted for the EWC activation delay",
        "ewc_dqn/train.py",
        "                self.ewc.add_frames(task, n * env.frames_per_step)\n",
        "                pass\n",
        (LEARNING,),
    ),
    NamedMutant(
        "eval-at-epsilon-1",
        "the end-of-visit evaluation plays at epsilon 1 (random play)",
        "ewc_dqn/train.py",
        "epsilon=ev.epsilon,",
        "epsilon=1.0,",
        (LEARNING,),
    ),
    NamedMutant(
        "total-not-clipped",
        "the paper's total sums the normalised scores without clipping each at 1",
        "envs/scores.py",
        "np.nansum(np.minimum(values, 1.0), axis=axis)",
        "np.nansum(values, axis=axis)",
        ("tests/test_paper_total.py",),
    ),
    NamedMutant(
        "target-never-synced",
        "the agent never copies the online network into the target network",
        "ewc_dqn/agent.py",
        "            self.sync_target()\n",
        "            pass\n",
        (LEARNING,),
    ),
    NamedMutant(
        "sync-copies-nothing",
        "a target sync is counted but copies no weights",
        "ewc_dqn/agent.py",
        "self.target.load_state_dict(self.online.state_dict())",
        "pass",
        (LEARNING,),
    ),
    NamedMutant(
        "rewards-not-clipped",
        "rewards are stored for learning unclipped",
        "ewc_dqn/agent.py",
        "return np.clip(reward, -1, 1) if cfg.clip_rewards else reward",
        "return reward",
        (LEARNING,),
    ),
    NamedMutant(
        "epsilon-on-global-counter",
        "epsilon follows the run's agent steps instead of the acting task's own",
        "ewc_dqn/train.py",
        "self.agent.epsilon(self.counters.steps.get(task, 0))",
        "self.agent.epsilon(self.step)",
        (LEARNING,),
    ),
    # The baselines (--consolidation l2, --rehearsal.fraction).
    NamedMutant(
        "l2-at-ewc-lam",
        "the L2 penalty is scaled by EWC's lambda instead of its own",
        "ewc_dqn/ewc.py",
        "self.lam = self.config.l2_lam if self._uniform else self.config.lam",
        "self.lam = self.config.lam",
        (L2, L2_LAM),
    ),
    NamedMutant(
        "l2-estimates-a-fisher",
        "the L2 baseline estimates a Fisher from the replay like EWC",
        "ewc_dqn/ewc.py",
        "        if self._uniform:\n            ones = self.uniform_metric()",
        "        if False:\n            ones = self.uniform_metric()",
        (L2,),
    ),
    NamedMutant(
        "l2-metric-not-ones",
        "the L2 metric is 2 instead of 1 on every weight",
        "ewc_dqn/ewc.py",
        "torch.ones_like(p, requires_grad=False)",
        "torch.full_like(p, 2.0)",
        (L2,),
    ),
    NamedMutant(
        "recurrence-keeps-the-old-term",
        "a recurring task's new term is stored but the penalty keeps evaluating its old one",
        "ewc_dqn/ewc.py",
        "            self._agg, self._agg_order = None, []\n\n    def _fold_online",
        "            pass\n\n    def _fold_online",
        (L2,),
    ),
    NamedMutant(
        "gains-protected",
        "the per-task gains and biases are protected with the shared weights",
        "ewc_dqn/ewc.py",
        "if p.requires_grad and not pattern.search(n)",
        "if p.requires_grad",
        (L2, L2_GAINS),
    ),
    NamedMutant(
        "rehearsed-with-the-current-task",
        "every transition of a mixed minibatch gets the first run's gains and biases",
        "ewc_dqn/networks.py",
        "g = torch.cat([self.task_gains[k].expand(n, -1) for k, n in task_id])",
        "g = torch.cat([self.task_gains[task_id[0][0]].expand(n, -1) for k, n in task_id])",
        (MIXED,),
    ),
    NamedMutant(
        "runs-out-of-order",
        "a mixed minibatch's task runs are listed in the wrong order",
        "ewc_dqn/rehearsal.py",
        "runs = tuple((k, int(b.action.shape[0])) for k, b in parts)",
        "runs = tuple((k, int(b.action.shape[0])) for k, b in reversed(parts))",
        (COMPOSITION,),
    ),
    NamedMutant(
        "rehearsal-uniform-over-tasks",
        "the rehearsed share is split evenly over the other tasks, not over their transitions",
        "ewc_dqn/rehearsal.py",
        "counts = rng.multinomial(rehearsed, sizes / sizes.sum())",
        "counts = rng.multinomial(rehearsed, np.full(len(sizes), 1 / len(sizes)))",
        (COMPOSITION,),
    ),
    NamedMutant(
        "rehearsal-half-share",
        "half the asked-for share of a minibatch is rehearsed",
        "ewc_dqn/rehearsal.py",
        "rehearsed = round(fraction * batch_size)",
        "rehearsed = round(fraction * batch_size) // 2",
        (COMPOSITION,),
    ),
    NamedMutant(
        "rehearsal-fresh-generator",
        "rehearsal splits its share with a generator that no checkpoint holds",
        "ewc_dqn/train.py",
        "task, self.replays, n, self.config.rehearsal.fraction, self.rng",
        "task, self.replays, n, self.config.rehearsal.fraction, np.random.default_rng()",
        (RESUME,),
    ),
    NamedMutant(
        "rehearsal-never-runs",
        "the training loop ignores --rehearsal.fraction",
        "ewc_dqn/train.py",
        "if self.config.rehearsal.fraction == 0:",
        "if True:",
        (RESUME,),
    ),
    NamedMutant(
        "l2-logged-as-ewc",
        "an L2 run logs its terms and penalty under ewc/",
        "ewc_dqn/ewc.py",
        'self.namespace = "l2" if self._uniform else "ewc"',
        'self.namespace = "ewc"',
        (RESUME,),
    ),
    NamedMutant(
        "no-ewc-is-ewc",
        "--no-ewc turns into --consolidation ewc",
        "ewc_dqn/cli_config.py",
        'out += ["--consolidation", "none"]',
        'out += ["--consolidation", "ewc"]',
        ("tests/test_bad_input.py::test_no_ewc_is_consolidation_none",),
    ),
    # Checkpoints: the chunk store.
    NamedMutant(
        "chunks-always-written",
        "a checkpoint writes every chunk again, not only those new since the chunks on disk",
        "ewc_dqn/chunk_store.py",
        "if digest not in missing and not _holds(chunk_path(store, digest), digest, part):",
        "if True:",
        (ONLY_NEW,),
    ),
    NamedMutant(
        "replay-digest-kept-after-a-write",
        "a replay chunk keeps the digest of its old contents after the buffer wrote into it",
        "ewc_dqn/replay.py",
        "if self._digests.get((env, start), (None,))[0] != writes",
        "if (env, start) not in self._digests",
        (REPLAY_DIGESTS,),
    ),
    NamedMutant(
        "replay-writes-miscounted",
        "the writes into a replay chunk are counted without the buffer's full laps",
        "ewc_dqn/replay.py",
        "writes = laps * (stop - start) + ",
        "writes = ",
        (REPLAY_DIGESTS,),
    ),
    NamedMutant(
        "replay-digests-kept-after-a-load",
        "a replay loaded from a state keeps the digests of the frames it held before",
        "ewc_dqn/replay.py",
        "        self._digests.clear()\n",
        "        pass\n",
        (REPLAY_LOADED,),
    ),
    NamedMutant(
        "replay-digests-not-kept-from-the-load",
        "a replay loaded from chunks hashes all its frames again at the next save",
        "ewc_dqn/replay.py",
        "            self._adopt_digests(chunks)\n",
        "            pass\n",
        (REPLAY_ADOPTED,),
    ),
    NamedMutant(
        "replay-digests-kept-from-other-chunks",
        "a replay takes the digests of chunks cut otherwise than its own as its chunks' digests",
        "ewc_dqn/replay.py",
        "            return  # chunked otherwise",
        "            pass  # chunked otherwise",
        (REPLAY_OTHER_CHUNKS,),
    ),
    NamedMutant(
        "ewc-digests-not-kept-from-the-load",
        "EWC terms loaded from chunks are hashed again at the next save",
        "ewc_dqn/ewc.py",
        "            self._digests.remember(key, tensor, digest)\n",
        "            pass\n",
        (EWC_ADOPTED,),
    ),
    NamedMutant(
        "ewc-digest-by-key-and-version",
        "an EWC term replaced by new tensors keeps the digest of the old ones",
        "ewc_dqn/chunk_store.py",
        "and seen[0] is tensor",
        "and True",
        (EWC_DIGESTS,),
    ),
    NamedMutant(
        "gc-keeps-the-newest-checkpoint-only",
        "garbage collection deletes the chunks of every kept checkpoint but the newest",
        "ewc_dqn/checkpoint.py",
        "for folder in list_checkpoints(run_dir):\n        chunks = chunks_of(folder)",
        "for folder in list_checkpoints(run_dir)[-1:]:\n        chunks = chunks_of(folder)",
        (GC,),
    ),
    NamedMutant(
        "gc-skips-an-unreadable-checkpoint",
        "garbage collection deletes the chunks of a kept checkpoint whose state.json is unreadable",
        "ewc_dqn/checkpoint.py",
        "if chunks is None:\n            return None",
        "if chunks is None:\n            continue",
        (GC_UNREADABLE,),
    ),
    NamedMutant(
        "failed-save-keeps-its-chunks",
        "a save that fails leaves the chunks it wrote in the store",
        "ewc_dqn/checkpoint.py",
        "remove(new_chunks)  # new to the store",
        "pass  # new to the store",
        (FAILED_SAVE,),
    ),
    NamedMutant(
        "failed-save-removes-every-chunk",
        "a save that fails removes every chunk, those of the checkpoints before it too",
        "ewc_dqn/checkpoint.py",
        "remove(new_chunks)  # new to the store",
        'remove((root / CHUNK_DIR).glob("*.bin"))  # new to the store',
        (FAILED_SAVE,),
    ),
    NamedMutant(
        "killed-saves-never-cleaned",
        "the temporary folder of a save that was killed stays on disk",
        "ewc_dqn/checkpoint.py",
        "    _remove_leftovers(root)\n",
        "    pass\n",
        (KILLED_SAVE,),
    ),
    NamedMutant(
        "chunk-temp-files-never-cleaned",
        "a chunk's temporary file left by a killed save stays on disk",
        "ewc_dqn/chunk_store.py",
        "stale = path.name.startswith(TEMP_PREFIX)",
        "stale = False",
        (KILLED_SAVE,),
    ),
    NamedMutant(
        "damaged-chunk-trusted",
        "a save trusts a chunk file of the right size that an earlier process left",
        "ewc_dqn/chunk_store.py",
        "if _vouched.get(path.absolute()) == signature:",
        "if True:",
        (REWRITTEN,),
    ),
    NamedMutant(
        "chunks-checked-at-every-save",
        "a save reads and hashes again the chunks this process has just written",
        "ewc_dqn/chunk_store.py",
        "    _vouch(path)\n    return path",
        "    return path",
        (REWRITTEN,),
    ),
    NamedMutant(
        "chunks-read-unchecked",
        "a chunk of the right size but altered contents loads without an error",
        "ewc_dqn/chunk_store.py",
        "if got != view.nbytes or content_digest(view) != digest:",
        "if got != view.nbytes:",
        (DAMAGED_CHUNK,),
    ),
    NamedMutant(
        "format-1-refused",
        "a checkpoint written before the chunk store no longer loads",
        "ewc_dqn/checkpoint.py",
        "READABLE_FORMATS = (1, 2)",
        "READABLE_FORMATS = (2,)",
        (FORMAT_1,),
    ),
    NamedMutant(
        "old-online-read-as-ewc",
        "a config.json with ewc.mode 'online' is read as EWC with one term per task",
        "ewc_dqn/config.py",
        '_LEGACY_MODES = {"separate": "ewc", "online": "online-ewc"}',
        '_LEGACY_MODES = {"separate": "ewc", "online": "ewc"}',
        (LEGACY,),
    ),
    NamedMutant(
        "old-keys-kept-for-compare",
        "compare keeps the replaced no_ewc / ewc.mode keys of old runs as config fields",
        "ewc_dqn/run_folder.py",
        "return {**upgrade_config_dict(config), **config_to_dict(parsed)}",
        "return {**config, **config_to_dict(parsed)}",
        (LEGACY,),
    ),
    NamedMutant(
        "visit-end-evaluated-twice",
        "a periodic evaluation due at a visit's last frame runs besides the end-of-visit one",
        "ewc_dqn/train.py",
        "if self.frames < visit.end_frame:\n                    self.evaluate(visit)",
        "if True:\n                    self.evaluate(visit)",
        (LEARNING + "::test_periodic_evaluations_and_the_end_of_visit_one_are_one_row_per_point",),
    ),
)


def _failures(junit: Path) -> list[str]:
    if not junit.is_file():
        return []
    failed = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(f"{case.get('classname', '')}::{case.get('name', '')}")
    return failed


def run(mutant: NamedMutant, suite: bool, log_dir: Path) -> tuple[list[str], int, float]:
    """Apply ``mutant`` to a scratch copy and run its tests; (failing tests, exit code, s)."""
    scratch = scratch_copy()
    try:
        target = scratch / mutant.path
        text = target.read_text()
        if text.count(mutant.old) != 1:
            raise SystemExit(
                f"{mutant.name}: the text to change occurs {text.count(mutant.old)} times in "
                f"{mutant.path} (expected once); update the mutant to the code"
            )
        target.write_text(text.replace(mutant.old, mutant.new))
        junit = log_dir / f"{mutant.name}.xml"
        tests = ["tests"] if suite else list(mutant.tests)
        t0 = time.perf_counter()
        with open(log_dir / f"{mutant.name}.log", "w") as log:
            code = subprocess.call(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 f"--junitxml={junit}", *tests],
                cwd=scratch, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        return _failures(junit), code, time.perf_counter() - t0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", action="store_true", help="run all of tests/ per mutant")
    parser.add_argument("--only", nargs="*", default=None, help="mutant names")
    parser.add_argument("--logs", type=Path, default=None, help="keep the logs in this folder")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if args.only is None or m.name in args.only]
    if args.only and len(chosen) != len(args.only):
        parser.error(f"known mutants: {' '.join(m.name for m in MUTANTS)}")
    log_dir = args.logs or Path(tempfile.mkdtemp(prefix="ewc-dqn-named-mutants-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    survivors = 0
    for mutant in chosen:
        failed, code, seconds = run(mutant, args.suite, log_dir)
        killed = code != 0
        survivors += not killed
        verdict = "killed  " if killed else "SURVIVED"
        print(f"{verdict} {mutant.name} ({seconds:.0f} s): {mutant.what}")
        for test in failed:
            print(f"    {test}")
        if killed and not failed:
            print(f"    (pytest exit code {code}; see {log_dir / (mutant.name + '.log')})")
        sys.stdout.flush()
    print(f"{len(chosen) - survivors}/{len(chosen)} killed; logs in {log_dir}")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
