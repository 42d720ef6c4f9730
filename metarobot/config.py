"""The settings of a meta-training run: values and ranges, nothing about this machine.

    config = TrainConfig(family="HalfCheetahDir", algo="maml-trpo")   # ValueError if a value
    config.kl_bound, config.trajectories                              # is outside its range
    policy = make_policy(config, family)          # the run's initial policy (seeded)
    stream_seed(config.seed, TRAIN_STREAM, iteration, 0)   # one seed per random stream

A TrainConfig checks that its values hold together; whether this machine has the device or
reaches the cluster it names is asked where they are used (train, evaluate, the worker
factory), so that a checkpoint trained on a GPU loads, evaluates and runs on a robot's CPU.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from . import checks, meta, ppo
from . import device as device_module
from .families import TaskFamily, make_family
from .policy import ACTIVATIONS, GaussianMLPPolicy
from .samples import BASELINE_FITS

ALGORITHMS = ("maml-trpo", "fomaml-trpo", "reptile", "trpo", "ppo")
# the learners that train one policy on the whole family without adapting it in training
DOMAIN_RANDOMISED = ("trpo", "ppo")
CLUSTERS = ("local", "ray")
HESSIANS = ("exact", "finite-difference")

# Trajectories per task of the MAML paper's training runs (its fast batch size).
PAPER_TRAJECTORIES = {"HalfCheetahDir": 20, "HalfCheetahVel": 10, "AntVel": 20, "AntDir": 40}
# TRPO's KL bound of the runs behind the MAML paper's results, where not 0.01: the released
# evaluation of HalfCheetahDir loads a run of meta step size 0.02 ("..._mlr0.02/itr_100.pkl")
PAPER_MAX_KL = {"HalfCheetahDir": 0.02}


# What each numeric setting of TrainConfig may hold (the command line's flags check the same).
FIELD_RANGES: Dict[str, checks.Range] = {
    "iterations": checks.COUNT, "meta_batch_size": checks.COUNT,
    "trajectories_per_task": checks.COUNT, "inner_steps": checks.COUNT,
    "cg_iters": checks.COUNT, "checkpoint_every": checks.COUNT,
    "max_backtracks": checks.COUNT, "chunk_samples": checks.COUNT,
    "inner_lr": checks.STEP_SIZE, "gamma": checks.Range(float, 0.0, 1.0),
    "gae_lambda": checks.Range(float, 0.0, 1.0), "max_kl": checks.POSITIVE,
    "cg_damping": checks.Range(float, low=0.0),
    "fisher_fraction": checks.Range(float, 0.0, 1.0, open_low=True),
    "reptile_epsilon": checks.POSITIVE, "reptile_epsilon_final": checks.Range(float, low=0.0),
    "reptile_anneal_iterations": checks.COUNT, "init_log_std": checks.Range(float),
    "inner_epochs": checks.COUNT, "inner_clip": checks.Range(float, 0.0, 1.0, open_low=True),
    "seed": checks.SEED, "threads": checks.NONNEGATIVE_INT, "time_budget": checks.POSITIVE,
    "workers": checks.COUNT, "threads_per_worker": checks.COUNT,
    "ppo_epochs": checks.COUNT, "ppo_minibatches": checks.COUNT,
    "ppo_clip": checks.Range(float, 0.0, 1.0, open_low=True), "ppo_lr": checks.POSITIVE,
    "ppo_value_coef": checks.Range(float, low=0.0),
    "ppo_entropy_coef": checks.Range(float, low=0.0), "ppo_desired_kl": checks.POSITIVE,
    "ppo_max_grad_norm": checks.POSITIVE,
}
OPTIONAL_FIELDS = ("trajectories_per_task", "max_kl", "time_budget", "ppo_desired_kl",
                   "reptile_epsilon_final", "reptile_anneal_iterations")
FIELD_CHOICES: Dict[str, Tuple[str, ...]] = {
    "algo": ALGORITHMS, "inner_objective": meta.INNER_OBJECTIVES,
    "inner_update": meta.INNER_UPDATES,
    "baseline_fit": BASELINE_FITS, "hessian": HESSIANS, "activation": ACTIVATIONS,
    "cluster": CLUSTERS,
}
# The settings of the adaptation inside meta-training and of Reptile's outer step, and what
# each is: trpo trains without adapting, so it takes them at their defaults only (its saved
# settings then say what trained it).
TRPO_FIXED: Dict[str, str] = {
    "inner_steps": "adaptation steps inside a training iteration",
    "learn_inner_lr": "Meta-SGD, step sizes learned through training's adaptation",
    "inner_objective": "what training's adaptation step differentiates",
    "inner_update": "Reptile's inner update",
    "inner_epochs": "epochs of Reptile's clipped inner update",
    "inner_clip": "the ratio bound of Reptile's clipped inner update",
    "reptile_epsilon": "Reptile's outer step size",
    "reptile_epsilon_final": "Reptile's final outer step size",
    "reptile_anneal_iterations": "Reptile's annealing iterations",
}
_RAY_ADDRESS = re.compile(r"^(?:ray://)?(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-_]+):"
                          r"(?P<port>\d+)$")


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a meta-training run; defaults are the MAML paper's."""

    family: str = "HalfCheetahDir"
    """Task family name."""
    family_overrides: Dict[str, Any] = dataclasses.field(default_factory=dict)
    """Fields of the family to change (see metarobot.make_family)."""
    algo: str = "maml-trpo"
    """maml-trpo (MAML, second order), fomaml-trpo (first order), reptile, or trpo: no
    meta-learning, one policy trained by TRPO on tasks drawn from the whole family (domain
    randomisation), the baseline that evaluate, adapt and hil adapt as they adapt MAML; ppo:
    the same by PPO with a learned value function (metarobot.ppo, the ppo_* settings)."""
    iterations: int = 100
    """Meta-iterations."""
    meta_batch_size: int = 40
    """Tasks per meta-iteration."""
    trajectories_per_task: Optional[int] = None
    """Episodes per task per sampling round; None: the paper's for the family (else 20)."""
    inner_steps: int = 1
    """Policy-gradient steps of the adaptation in training (trpo takes none)."""
    inner_lr: float = 0.1
    """Step size of the adaptation steps (for trpo, of the adaptation after training)."""
    inner_objective: str = "pg"
    """What the adaptation step differentiates: pg, the policy-gradient loss (the MAML
    paper's); lvc, ProMP's low-variance curvature loss, the same step with the score's outer
    product in its second derivatives (maml-trpo only)."""
    inner_update: str = "pg"
    """What each adaptation step does with its batch (reptile): pg, one policy-gradient
    step; clipped, inner_epochs full-batch steps of inner_lr on PPO's clipped surrogate (the
    first is the pg step). Evaluation and adaptation of the checkpoint use the same."""
    inner_epochs: int = 4
    """Gradient steps per batch of the clipped inner update."""
    inner_clip: float = 0.2
    """The clipped inner update's ratio bound: 1 +- inner_clip."""
    learn_inner_lr: bool = False
    """Meta-SGD: one adaptation step size per parameter entry, starting at inner_lr and
    learned by the outer step with the policy (maml-trpo, fomaml-trpo); evaluate and adapt
    then use them."""
    gamma: float = 0.99
    """Discount."""
    gae_lambda: float = 1.0
    """GAE lambda of the advantages (1: Monte Carlo returns minus the baseline)."""
    baseline_fit: str = "current"
    """current: each task's baseline is fit on its own batch; previous: the reference code's
    training order, predicting with the fit of the batch processed just before (the previous
    task's); fresh: the reference code's evaluation order, one baseline per task that predicts
    each batch with the fit of the same task's batch before (0 for the first batch)."""
    max_kl: Optional[float] = None
    """TRPO's KL bound per outer step; None: the paper's run for the family (0.02 for
    HalfCheetahDir, else 0.01)."""
    cg_iters: int = 10
    """Conjugate-gradient iterations of the TRPO step."""
    cg_damping: float = 1e-5
    """Damping added to the Fisher-vector products."""
    fisher_fraction: float = 1.0
    """Fraction of each task's trajectories the Fisher-vector products use (less is faster;
    on HalfCheetahDir 0.25 learned markedly worse than 1.0)."""
    hessian: str = "exact"
    """How the outer TRPO step's KL Hessian-vector products are computed: exact (Fisher
    products through the adaptation); finite-difference, as the MAML paper's code (symmetric
    differences of the KL's gradient with a step of 1 / |theta| times the vector, see
    trpo.finite_difference_product; on HalfCheetahDir an iteration takes about 20% longer)."""
    max_backtracks: int = 15
    """Line-search steps of TRPO (ratio 0.8)."""
    chunk_samples: int = 8192
    """Samples per chunk of tasks (whole tasks, at least one; and at least min(tasks, 16)
    chunks, samples.chunk_ranges): each chunk's share of the outer step is computed on one
    thread, the chunks side by side and added in chunk order. Chunks whose activations fit
    the CPU's caches run about twice as fast as all tasks at once. The results depend on it
    (sums in another order) but not on the threads or workers that compute the chunks."""
    reptile_epsilon: float = 0.1
    """Reptile's outer step size (at the first iteration when it anneals)."""
    reptile_epsilon_final: Optional[float] = None
    """Reptile: the outer step size reached after reptile_anneal_iterations, linearly from
    reptile_epsilon (and kept after); None: no annealing."""
    reptile_anneal_iterations: Optional[int] = None
    """Reptile: iterations over which the outer step size anneals (default: iterations). A
    setting of its own, so that a resumed run with more iterations keeps the schedule."""
    hidden_sizes: Tuple[int, ...] = (100, 100)
    """Hidden layer widths of the policy."""
    activation: str = "relu"
    """Hidden activation of the policy."""
    init_log_std: float = 0.0
    """Initial log standard deviation of the policy."""
    seed: int = 0
    """Seeds tasks, simulations and the policy's initial weights."""
    threads: int = 0
    """Simulation threads, and chunk executors of the learner; 0: one per CPU. The results do
    not depend on it (a resumed run may change it)."""
    device: str = "cpu"
    """Where the learner runs: cpu, cuda (or cuda:N), or auto (cuda when a GPU is visible).
    Sampling stays on CPU threads; each sampled batch goes to the device once, and the inner
    and outer steps run there, all tasks in one batch. On CUDA the results agree with the
    CPU's to float32 rounding. A resumed run may change device."""
    cuda_graphs: bool = False
    """On CUDA: try to replay the Fisher-vector product of the conjugate gradient as one CUDA
    graph (it runs eagerly, with a warning, where it cannot be captured). Off by default: on
    an H200 the capture of MAML's product fails and the eager outer step is the faster
    (BENCHMARKS.md, "The learner on a GPU")."""
    cluster: str = "local"
    """Where the per-task work runs: local (this process) or ray (one Ray actor per shard of
    the meta-batch; see docs/cluster.md). The results are the same bit for bit (device cpu
    only)."""
    ray_address: Optional[str] = None
    """With cluster ray: auto (the cluster this machine belongs to), HOST:PORT of a
    cluster's head, or None to start a Ray instance on this machine for the run."""
    workers: int = 1
    """With cluster ray: task workers (Ray actors), each owning a shard of whole task chunks
    (at most one worker per chunk, see chunk_samples)."""
    threads_per_worker: int = 1
    """With cluster ray: CPUs each worker reserves, its simulation and torch threads."""
    checkpoint_every: int = 10
    """Iterations between checkpoints (the last one is always saved)."""
    time_budget: Optional[float] = None
    """Seconds of training after which the run stops at the end of an iteration."""
    ppo_epochs: int = 5
    """ppo: passes over each iteration's samples."""
    ppo_minibatches: int = 4
    """ppo: minibatches per pass (each the same share of every task's samples)."""
    ppo_clip: float = 0.2
    """ppo: the ratio bound of the clipped surrogate (and the value loss's clip)."""
    ppo_lr: float = 1e-3
    """ppo: Adam's initial step size (adapted towards ppo_desired_kl when that is set)."""
    ppo_value_coef: float = 1.0
    """ppo: weight of the value function's loss."""
    ppo_entropy_coef: float = 0.01
    """ppo: weight of the policy's entropy bonus."""
    ppo_desired_kl: Optional[float] = 0.01
    """ppo: the KL per minibatch the step size is adapted towards (x or / 1.5, between 1e-5
    and 1e-2); None: a fixed step size."""
    ppo_max_grad_norm: float = 1.0
    """ppo: the gradient's norm is clipped to this before each Adam step."""
    init: Optional[str] = None
    """A checkpoint (file or run directory) whose policy parameters start the run instead of
    a fresh initialisation: meta-training from a domain-randomised (trpo) policy, say. Its
    layer sizes must be this run's; Meta-SGD step sizes still start at inner_lr."""

    def __post_init__(self):
        if isinstance(self.hidden_sizes, (str, bytes)) or \
                not hasattr(self.hidden_sizes, "__iter__"):
            raise ValueError(f"hidden_sizes should be a sequence of integers >= 1, got "
                             f"{self.hidden_sizes!r}")
        self.hidden_sizes = tuple(self.hidden_sizes)
        for h in self.hidden_sizes:
            checks.COUNT.check(h, "hidden_sizes")
        self.hidden_sizes = tuple(int(h) for h in self.hidden_sizes)
        for name, allowed in FIELD_RANGES.items():
            value = getattr(self, name)
            if value is None and name in OPTIONAL_FIELDS:
                continue
            allowed.check(value, name)
        device_module.check_name(self.device)  # its form; resolve() asks this machine
        for name, values in FIELD_CHOICES.items():
            if getattr(self, name) not in values:
                raise ValueError(f"{name} should be one of {values}, got "
                                 f"{getattr(self, name)!r}")
        for name in ("learn_inner_lr", "cuda_graphs"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} should be True or False, got "
                                 f"{getattr(self, name)!r}")
        if self.algo in DOMAIN_RANDOMISED:
            self._check_trpo()
        if self.inner_objective != "pg" and self.algo != "maml-trpo":
            raise ValueError(f"inner_objective {self.inner_objective!r} changes only second "
                             f"derivatives of the adaptation: it needs maml-trpo, not "
                             f"{self.algo}")
        if self.inner_update != "pg" and self.algo != "reptile":
            raise ValueError(f"inner_update {self.inner_update!r} is not differentiated "
                             f"through: it needs reptile, not {self.algo} (MAML's outer step "
                             f"differentiates the pg step)")
        if self.learn_inner_lr and self.algo == "reptile":
            raise ValueError("learn_inner_lr (Meta-SGD) needs an outer step that "
                             "differentiates the adaptation: maml-trpo or fomaml-trpo, not "
                             "reptile")
        if self.reptile_epsilon_final is not None and self.reptile_anneal_iterations is None:
            self.reptile_anneal_iterations = self.iterations  # saved: resuming keeps it
        make_family(self.family, **self.family_overrides)  # raises for unknown names
        self._check_cluster()

    def _check_trpo(self) -> None:
        """trpo's settings hold together: the TRPO_FIXED ones at their defaults."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, what in TRPO_FIXED.items():
            value = getattr(self, name)
            if value != defaults[name]:
                raise ValueError(
                    f"algo {self.algo!r} trains one policy without adapting it in training, so "
                    f"{name} ({what}) should be its default {defaults[name]!r}, got {value!r}; "
                    f"evaluate, adapt and hil adapt a {self.algo} checkpoint afterwards (--steps or "
                    f"--adapt-steps, --lr), or train a meta-learner (algo maml-trpo, "
                    f"fomaml-trpo or reptile)")

    def _check_cluster(self) -> None:
        """The cluster settings hold together (their values only: whether the cluster is
        reachable and the meta-batch splits over its workers is asked where they are used)."""
        if self.cluster == "local":
            if self.workers != 1:
                raise ValueError(f"workers {self.workers} needs cluster 'ray' (--cluster ray): "
                                 f"in one process the shards would only run one after the "
                                 f"other")
            if self.ray_address is not None:
                raise ValueError("ray_address (--ray-address) needs cluster 'ray' (--cluster "
                                 "ray)")
            return
        if self.ray_address is not None:
            parse_ray_address(self.ray_address)
        if self.device != "cpu":  # 'auto' too: a worker on a GPU node would take cuda
            raise ValueError(f"cluster 'ray' runs the learner on its workers' CPUs; device "
                             f"{self.device!r} is for one machine (--device cpu)")
        if self.baseline_fit == "previous" and self.workers > 1:
            raise ValueError("baseline_fit 'previous' predicts each task's values with the fit "
                             "of the task before it, across shards: it needs one worker (or "
                             "baseline_fit 'current' or 'fresh')")

    @property
    def kl_bound(self) -> float:
        """The KL bound in force: max_kl, or the paper's for the family."""
        if self.max_kl is not None:
            return self.max_kl
        return PAPER_MAX_KL.get(self.family, 0.01)

    def epsilon_at(self, iteration: int) -> float:
        """Reptile's outer step size at an iteration (0-based): reptile_epsilon, annealed
        linearly to reptile_epsilon_final over reptile_anneal_iterations when that is set."""
        if self.reptile_epsilon_final is None:
            return self.reptile_epsilon
        done = min(1.0, iteration / max(self.reptile_anneal_iterations or 1, 1))
        return self.reptile_epsilon + (self.reptile_epsilon_final - self.reptile_epsilon) * done

    @property
    def train_inner_steps(self) -> int:
        """Adaptation steps per task in a training iteration: inner_steps for the
        meta-learners; none for trpo, whose outer step is TRPO's on the batch sampled with
        theta itself (its checkpoints are adapted afterwards, see adaptation.step_sizes)."""
        return 0 if self.algo in DOMAIN_RANDOMISED else self.inner_steps

    @property
    def ppo_settings(self) -> "ppo.PpoSettings":
        """The ppo_* settings as metarobot.ppo takes them."""
        return ppo.PpoSettings(self.ppo_epochs, self.ppo_minibatches, self.ppo_clip,
                               self.ppo_value_coef, self.ppo_entropy_coef,
                               self.ppo_desired_kl, self.ppo_max_grad_norm)

    @property
    def inner_rule(self) -> meta.InnerUpdate:
        """The adaptation step's update (see inner_update)."""
        return meta.InnerUpdate(self.inner_update, self.inner_epochs if
                                self.inner_update == "clipped" else 1, self.inner_clip)

    @property
    def trajectories(self) -> int:
        if self.trajectories_per_task is not None:
            return self.trajectories_per_task
        return PAPER_TRAJECTORIES.get(self.family, 20)

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}")
        return cls(**d)


def field_docs() -> Dict[str, str]:
    """Each TrainConfig field's docstring (the text under it in the class), for help texts."""
    tree = ast.parse(inspect.getsource(TrainConfig)).body[0]
    docs = {}
    for a, b in zip(tree.body, tree.body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and \
                isinstance(b.value, ast.Constant):
            docs[a.target.id] = b.value.value
    return docs


def parse_ray_address(address: Any) -> Tuple[Optional[str], Optional[int]]:
    """(host, port) of a Ray address, (None, None) for 'auto'; ValueError if malformed."""
    if address == "auto":
        return None, None
    m = _RAY_ADDRESS.match(address) if isinstance(address, str) else None
    if m is None or not 1 <= int(m.group("port")) <= 65535:
        raise ValueError(f"ray_address should be 'auto' or HOST:PORT of a Ray head (port "
                         f"1-65535, e.g. 10.0.0.5:6379), got {address!r}")
    return m.group("host").strip("[]"), int(m.group("port"))


# ------------------------------------------------------------------------------ random streams

# Every random draw of a run comes from its own stream of (seed, stream, ...): the training
# tasks and simulations of each iteration, held-out evaluation, one-task adaptation, and the
# policy's initial weights. An iteration's draws depend on (seed, iteration) alone, so a
# resumed run draws what the uninterrupted run would have.
TRAIN_STREAM, EVAL_STREAM, ADAPT_STREAM, INIT_STREAM = 0, 1, 2, 3
# ppo: the minibatches of each pass, and the value function's initial weights
PPO_STREAM, VALUE_INIT_STREAM = 4, 5


def stream_seed(seed: int, *key: int) -> int:
    """A 32-bit seed of its own for each (seed, key...) stream."""
    return int(np.random.SeedSequence(seed, spawn_key=key).generate_state(1)[0])


def make_policy(config: TrainConfig, family: TaskFamily) -> GaussianMLPPolicy:
    """The run's policy, its initial weights drawn from the run's seed."""
    model = family.load_model()
    torch.manual_seed(stream_seed(config.seed, INIT_STREAM))
    return GaussianMLPPolicy(family.observation_dim(model), model.nu, config.hidden_sizes,
                             config.activation, config.init_log_std)
