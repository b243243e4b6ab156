"""The flags of the training entry points (main_single_gpu.py, main_multi_gpu.py) and their resolution: the shared
resolution of every entry point (utils/config/resolve.py), then the recipe's checks (utils/train/recipes) and the
run's own derivations (seed, log file, run folder). The resolved configuration is written to the run folder as
config.json, data paths absolute, each value under its flag's name.
"""
import time
from pathlib import Path

from utils.config.flags import (
    DATA_FLAGS,
    FLAGS,
    SEED_MAX,
    add_flag,
    add_flags,
    entry_parser,
    flag_spellings,
    init_name,
    seed_value,
    str2bool,
)
from utils.config.methods import METHODS, is_shallow
from utils.config.presets import BIT_SEEDS, metric_name
from utils.config.resolve import resolve_flags
from utils.config.run_folder import EVAL_KEYS, resolve_checkpoint, run_folder_of
from utils.runtime.errors import UsageError
from utils.train.recipes import RECIPES, resolve_recipe

# Measured (docs/training.md#training-the-whole-network-from-scratch): fc7 standardised once for the initial backbone,
# then the backbone trained under it (dropout on, fc7 gradients scaled by 1/std ~ 50x), the hash outputs saturate and
# mAP stays at random codes' level.
STANDARDIZED_WHOLE_NETWORK = (
    "--train_scope all cannot train with --standardize_features true (the toy preset's from-scratch recipe): the fc7 "
    "standardisation is fitted once for the initial backbone and does not follow a backbone that trains, so nothing "
    "learns; use --train_scope hash, or --standardize_features false with ImageNet weights (--backbone_weights)")


def get_parser(description="HashNet (ICCV 2017) in PaddlePaddle"):
    """The training / evaluation flags of main_single_gpu.py and main_multi_gpu.py."""
    p = entry_parser(description)
    g = p.add_argument_group("run")
    add_flags(g, ("--bit",), help={"--bit": "hash code length"})
    add_flag(g, "--seed", type=seed_value, default=None,
             help=f"random seed, 0 to {SEED_MAX} (default: the seed repository's per-bit seed, "
                  f"docs/protocol.md#seed-recipe)")
    add_flag(g, "--eval", action="store_true", help="only evaluate --pretrained")
    add_flags(g, ("--pretrained", "--device", "--encoder"),
              help={"--pretrained": "HashNet checkpoint to evaluate (or its run folder) or to start from"})
    add_flag(g, "--resume", default=None,
             help="last_{bit}.pdckpt (or its run folder) to continue training from; 'auto' = the run folder's "
                  "last_{bit}.pdckpt when there is one, else start fresh (rerun the identical command after "
                  "preemption)")
    add_flag(g, "--overwrite", action="store_true",
             help="train into a --run-name folder that holds an earlier run: move that run aside to "
                  "<folder>.old-<time> first (without it, or --resume, such a folder is refused)")
    add_flag(g, "--output-dir", default="output", help="parent folder of the run folders")
    add_flag(g, "--run-name", default=None,
             help="run folder name; {dataset} and {bit} are filled in (default {dataset}_{bit}bits_train_{time}, "
                  "or {dataset}_{bit}bits_train with --resume auto, so a rerun finds its folder)")
    add_flag(g, "--log-path", "--log_path", default=None,
             help="log file name inside the run folder (default log_train_{bit}.txt / log_eval_{bit}.txt)")
    add_flag(g, "--log-freq", "--log_freq", type=int, default=50, help="log a training line every N steps")
    add_flag(g, "--plots", type=str2bool, default=True,
             help="draw pr_curve.png, precision_at_n.png and training_curve.png into the run folder at its end "
                  "(matplotlib, ~1 s); false for sweeps and tests: `python -m utils.hashing.plots RUN_DIR` draws them "
                  "later")
    add_flag(g, "--recipe", default="seed", choices=tuple(RECIPES),
             help="seed = the seed repository's recipe (docs/protocol.md#seed-recipe); paper = the authors' Caffe "
                  "recipe that produced the paper's Table 1, counted in iterations (docs/protocol.md#paper-recipe)")
    add_flag(g, "--method", default="hashnet", choices=METHODS,
             help="what is trained or fitted (docs/methods.md): hashnet; the ablation's hashnet-w (no pair weighting), "
                  "hashnet-sgn (no continuation: tanh at scale 1, sign at test), hashnet+c (continuous similarity), "
                  "each under either --recipe; the deep baselines dhn, dnnh, cnnh (seed recipe); the shallow "
                  "baselines lsh, sh, itq, itq-cca, bre, ksh, sdh, fitted on the backbone's fc7")
    g = add_flags(p, DATA_FLAGS, "data")
    add_flag(g, "--cache", default="all", choices=["all", "eval", "train"],
             help="which caches --cache-dir holds: evaluation (exact, ~150 KB per image at 224 px), training "
                  "(resized images, ~260 KB per COCO image), or both")
    add_flag(g, "--sampling", default=None, choices=["replicated", "sharded"],
             help="several processes: 'replicated' = every process reads the whole training set each epoch with its "
                  "own shuffle (the seed repository's schedule, docs/protocol.md#seed-recipe); 'sharded' = one pass "
                  "over the data split among the processes (half the steps on 2 processes). Identical with one "
                  "process")
    add_flags(g, ("--crop-size", "--resize-size", "--resize-mode"))
    g = p.add_argument_group("optimisation")
    add_flag(g, "--epochs", "--epoch", type=int, default=None, help="training epochs (seed recipe)")
    add_flag(g, "--iterations", type=int, default=None, help="training iterations (paper recipe; Caffe's max_iter)")
    add_flag(g, "--snapshot-every", type=int, default=None,
             help="paper recipe: iterations per block, each ending in a checkpoint and a log row (Caffe's snapshot)")
    add_flag(g, "--eval-every", "--eval_epoch", type=int, default=None,
             help="evaluate every N epochs (seed recipe) or iterations (paper recipe), and at the end")
    add_flag(g, "--learning-rate", "--learning_rate", type=float, default=None,
             help="base lr per 64 images; the run uses lr * batch_size * world_size / 64 (hash layer x10)")
    add_flag(g, "--optimizer", default=None, choices=["sgd", "adam", "adamw"],
             help="sgd = momentum SGD (the seed repository's)")
    add_flag(g, "--weight-decay", "--weight_decay", type=float, default=None)
    add_flag(g, "--momentum", type=float, default=None)
    add_flag(g, "--lr-step", "--de_step", type=int, default=None,
             help="halve the lr every N epochs (seed recipe) or iterations (paper recipe)")
    add_flag(g, "--alpha", type=float, default=None, help="HashNetLoss alpha (seed recipe; docs/protocol.md#loss)")
    add_flag(g, "--continuation-step", "--step_continuation", type=int, default=None,
             help="epochs (seed recipe) or iterations (paper recipe) per step of the continuation tanh(scale*o) "
                  "(docs/protocol.md#continuation)")
    g = p.add_argument_group("the paper recipe's loss and continuation (docs/protocol.md#paper-recipe)")
    add_flag(g, "--sigmoid-param", type=float, default=None,
             help="alpha of the pairwise layer, p = alpha * u1.u2 (default 10 / bits, as the authors' prototxt notes)")
    add_flag(g, "--class-num", type=float, default=None, help="weight of a similar pair (COCO 1, NUS-WIDE 5, "
                                                                  "ImageNet 100)")
    add_flag(g, "--loss-threshold", type=float, default=None, help="above it a pair's loss is linear (l_threshold)")
    add_flag(g, "--continuous-similarity", type=str2bool, default=None,
             help="weight each pair's gradient by its label overlap (continous_similarity in the prototxt)")
    add_flag(g, "--scale-gamma", type=float, default=None, help="ScaleTanH: scale = (1 + gamma * iteration) ** power")
    add_flag(g, "--scale-power", type=float, default=None, help="ScaleTanH power")
    add_flag(g, "--map-at", "--topK", type=int, default=None, help="K of mAP@K; -1 = the whole database")
    g = add_flags(p, ("--backbone",), "backbone", help={"--backbone": FLAGS["--backbone"][1]["help"].replace(
        "the trained run's, else ", "")})
    add_flag(g, "--backbone-weights", "--backbone_weights", default=None,
             help="ImageNet weights of the backbone (.pth or .pdparams); 'auto' looks in pretrained/ by the "
                  "backbone's file names (docs/backbones.md), 'none' = random init")
    add_flag(g, "--init", default=None, type=init_name, choices=["paddle", "kaiming"],
             help="init of a random backbone: Paddle's default initialisation, or Kaiming normal ('torchvision' is "
                  "read as 'paddle')")
    add_flag(g, "--standardize-features", "--standardize_features", type=str2bool, default=None,
             help="standardise fc7 with training-set statistics before the hash layer (from-scratch recipe)")
    add_flag(g, "--train-scope", "--train_scope", default=None, choices=["all", "hash"],
             help="train the whole network or the hash layer")
    add_flag(g, "--frozen-views", type=int, default=0,
             help="with --train-scope hash the frozen backbone runs once per run (utils/train/frozen.py): its features "
                  "of "
                  "the training images are cached, 0 = of the evaluation view (no augmentation), N = of N random "
                  "crops + flips drawn like the training transform, epoch e using view (e - 1) %% N + 1 (one more "
                  "backbone pass over the training set per view; docs/training.md)")
    return p


def parse_args(argv=None, description=None):
    """The training / evaluation configuration of main_*.py: resolve_flags, then the run's own derivations (seed,
    log file, run folder) and the checks that only training needs."""
    parser = get_parser(description or "HashNet (ICCV 2017) in PaddlePaddle")
    args, given, _ = resolve_flags(parser, argv, from_run=lambda a: a.eval and a.pretrained, run_keys=EVAL_KEYS,
                                   derive_workers=False)  # the engine derives it, knowing the processes per machine
    if args.eval and is_shallow(args.method):
        raise UsageError(f"--eval evaluates a trained checkpoint; --method {args.method} is fitted and evaluated "
                         f"in one run (its metrics.json): run it without --eval")
    if args.eval and not args.pretrained:
        raise UsageError("--eval needs --pretrained PATH (a model_best_{bit}.pdparams or last_{bit}.pdckpt)")
    if args.eval:
        args.pretrained = str(resolve_checkpoint(args.pretrained, args.bit))
        if "backbone_weights" not in given:
            args.backbone_weights = "none"  # the checkpoint holds every weight: no ImageNet file to look for
        if "output_dir" not in given:  # beside the evaluated run, not under whatever folder the command runs in
            args.output_dir = str(run_folder_of(args.pretrained).resolve().parent)
    args.metric = metric_name(args.map_at)
    resolve_recipe(args, given, flag_spellings(parser, argv))
    if args.seed is None:
        args.seed = BIT_SEEDS.get(args.bit, 0)
    if args.log_path is None:
        args.log_path = f"log_{'eval' if args.eval else 'train'}_{args.bit}.txt"
    if args.overwrite and args.resume:
        raise UsageError(f"--overwrite (move the run folder's earlier run aside and start again) and --resume "
                         f"{args.resume} (continue it) contradict each other: give one")
    # a default timestamped name is made unique when the folder is created (utils/train/run_lock.claim_fresh_folder)
    args.run_name_is_default = args.run_name is None and not args.resume
    if args.run_name is None:
        if args.resume == "auto":
            args.run_name = f"{args.dataset}_{args.bit}bits_train"
        elif args.resume:
            resume = Path(args.resume)
            args.run_name = (resume if resume.is_dir() else resume.parent).name
            args.output_dir = str((resume if resume.is_dir() else resume.parent).parent)
        else:
            kind = "eval" if args.eval else "train"
            args.run_name = f"{args.dataset}_{args.bit}bits_{kind}_{time.strftime('%Y%m%d-%H%M%S')}"
    args.run_name = args.run_name.replace("{dataset}", args.dataset).replace("{bit}", str(args.bit))
    args.run_dir = str(Path(args.output_dir) / args.run_name)
    if args.train_scope == "all" and args.standardize_features and not args.eval:
        raise UsageError(STANDARDIZED_WHOLE_NETWORK)
    if args.frozen_views < 0:
        raise UsageError(f"{flag_spellings(parser, argv)['frozen_views']} must be >= 0 (0 = no augmentation), got "
                         f"{args.frozen_views}")
    return args
