"""The ``ddformat`` command: inspect, verify, preview, convert, export and eval ``.dd`` files.

Each subcommand is one function registered with :func:`command`, which also declares its
arguments, so a new subcommand is one new function. Exit status: 0 when all is well; 1 when a
file or an input is invalid (a :class:`FormatError` or :class:`ValueError`, whose message names
what and where); 2 for usage and I/O errors (bad arguments, a missing or unreadable file).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from tqdm import tqdm

from .. import __version__
from ..errors import FormatError
from ..reader import open as open_dd
from .report import build_report, render_text

Argument = tuple[tuple[str, ...], dict[str, Any]]
Runner = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    arguments: tuple[Argument, ...]
    run: Runner


COMMANDS: dict[str, Command] = {}


class UsageError(Exception):
    """The command line asks for something the command cannot do (exit status 2)."""


def arg(*flags: str, **options: Any) -> Argument:
    """One ``add_argument`` call, written down for :func:`command`."""
    return flags, options


def command(name: str, help: str, *arguments: Argument) -> Callable[[Runner], Runner]:
    """Register the decorated function as subcommand ``name`` taking ``arguments``."""
    def register(run: Runner) -> Runner:
        COMMANDS[name] = Command(name, help, arguments, run)
        return run
    return register


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _range(text: str) -> tuple[float, float]:
    values = _floats(text)
    if len(values) != 2 or not values[0] < values[1]:
        raise argparse.ArgumentTypeError(f"expected LO,HI with LO < HI, got {text!r}")
    return values[0], values[1]


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",")]


@contextmanager
def _stage(desc: str) -> Iterator[None]:
    """A one-step progress bar (elapsed time, on a terminal only) for work that reports none."""
    with tqdm(total=1, desc=desc, unit="step", disable=None, leave=False) as bar:
        yield
        bar.update()


# --------------------------------------------------------------------------- subcommands


@command("inspect", "metadata, sections, bit account, labels, weights, recipe and provenance",
         arg("file", help=".dd file (path or URL)"),
         arg("--json", action="store_true", help="print one JSON object instead of text"),
         arg("--plot", metavar="PNG", help="also draw the bit account (by component and class) to PNG"))
def run_inspect(args: argparse.Namespace) -> int:
    with open_dd(args.file) as dd:
        report = build_report(dd, args.file)
    print(json.dumps(report, indent=2) if args.json else render_text(report))
    if args.plot:
        from .plots import bit_breakdown_png

        bit_breakdown_png(report, args.plot)
    return 0


@command("verify", "check every checksum and the content hash, and decode everything once",
         arg("file", help=".dd file (path or URL)"))
def run_verify(args: argparse.Namespace) -> int:
    with open_dd(args.file) as dd:
        with _stage("verify"):
            dd.verify()
        kinds = [s.kind for s in dd.header.sections]
        shape = "x".join(map(str, dd.dataset["sample_shape"]))
        print(f"OK {args.file} ({dd.size} bytes)\n"
              f"  checksums: preamble, header and {len(kinds)} sections ({', '.join(kinds)}); "
              f"content hash {dd.provenance['content_hash']}\n"
              f"  decoded: {dd.num_samples} samples of {shape} {dd.dataset['sample_dtype']}, "
              f"{dd.label_kind} labels, {dd.recipe['weighting']['scheme']} weights")
    return 0


@command("preview", "a PNG grid of samples: one row per class",
         arg("file", help=".dd file (path or URL)"),
         arg("--out", required=True, help="PNG file to write"),
         arg("--per-class", type=int, default=8, help="samples per class (columns; default 8)"),
         arg("--classes", type=int, default=None, help="show only the first N classes (rows)"),
         arg("--scale", type=int, default=1, help="enlarge every pixel to SCALE×SCALE (default 1)"),
         arg("--no-names", action="store_true", help="leave out the margin of class names"))
def run_preview(args: argparse.Namespace) -> int:
    from .preview import preview as render_grid

    with open_dd(args.file) as dd:
        image = render_grid(dd, per_class=args.per_class, classes=args.classes, scale=args.scale,
                            names=not args.no_names)
    image.save(args.out, format="PNG")
    print(f"wrote {args.out} ({image.width}x{image.height} px)")
    return 0


def _detect_source(source: Path) -> str:
    if any((source / f).is_file() for f in ("images.pt", "images_best.pt")):
        return "tensors"
    return "webdataset" if any(source.glob("*.tar")) else "imagefolder"


@command("convert", "import a directory of tensor files, an image folder or WebDataset shards into a .dd file",
         arg("src", help="directory: images(.pt|_best.pt) + labels, one sub-folder of images per class, "
                         "or WebDataset .tar shards"),
         arg("out", help=".dd file to write"),
         arg("--from", dest="source_kind", choices=("tensors", "ddranking", "imagefolder", "webdataset", "auto"),
             default="auto", help="layout of SRC (default auto: tensors if SRC holds images.pt or images_best.pt, "
                                  "webdataset if it holds .tar files, else imagefolder; ddranking is tensors)"),
         arg("--name", default=None, help="dataset name to record"),
         arg("--num-classes", type=int, default=None, help="tensors: number of classes"),
         arg("--class-names", type=_names, default=None, help="tensors: comma-separated class names"),
         arg("--mean", type=_floats, default=None, help="tensors: per-channel mean of the normalisation applied"),
         arg("--std", type=_floats, default=None, help="tensors: per-channel std of the normalisation applied"),
         arg("--value-range", type=_range, default=None, metavar="LO,HI",
             help="tensors: the range unnormalised float images live in, e.g. --value-range=-1,1 "
                  "(default 0,1; images outside it are refused)"),
         arg("--soft-labels", choices=("auto", "probs", "logits"), default=None,
             help="tensors: how to read float labels (default auto)"),
         arg("--weights-file", default=None, help="imagefolder: per-sample weights (WMDD sample_weights.txt)"))
def run_convert(args: argparse.Namespace) -> int:
    source = Path(args.src)
    if not source.is_dir():
        raise UsageError(f"{source} is not a directory")
    kind = _detect_source(source) if args.source_kind == "auto" else args.source_kind
    kind = "tensors" if kind == "ddranking" else kind
    tensor_options = {"--num-classes": args.num_classes, "--class-names": args.class_names, "--mean": args.mean,
                      "--std": args.std, "--value-range": args.value_range, "--soft-labels": args.soft_labels}
    if kind != "imagefolder" and args.weights_file is not None:
        raise UsageError("--weights-file applies to --from imagefolder")
    given = [flag for flag, value in tensor_options.items() if value is not None]
    if kind != "tensors" and given:
        raise UsageError(f"{', '.join(given)} apply to --from tensors, not to --from {kind}")

    from ..interop import import_imagefolder, import_tensor_files, import_webdataset

    with _stage(f"convert {kind}"):
        if kind == "tensors":
            out = import_tensor_files(source, args.out, name=args.name, num_classes=args.num_classes,
                                      class_names=args.class_names, mean=args.mean, std=args.std,
                                      value_range=args.value_range,
                                      soft_labels=args.soft_labels or "auto")
        elif kind == "webdataset":
            out = import_webdataset(source, args.out, name=args.name)
        else:
            out = import_imagefolder(source, args.out, weights_file=args.weights_file, name=args.name)
    with open_dd(out) as dd:
        print(f"wrote {out} from {kind}: {dd.num_samples} samples, {dd.num_classes} classes, "
              f"{dd.size} bytes, bpc {dd.bpc!r}")
    return 0


@command("export", "write a .dd file out as an image folder, tensor files or WebDataset shards",
         arg("file", help=".dd file (path or URL)"),
         arg("outdir", help="directory to write"),
         arg("--to", choices=("imagefolder", "tensors", "ddranking", "webdataset"), default="imagefolder",
             help="imagefolder (default): one JPEG/PNG tree; tensors: images.pt, labels.pt (MTT); ddranking: "
                  "the same, class-ordered model inputs for DD-Ranking; webdataset: .tar shards"),
         arg("--style", choices=("sre2l", "rded"), default=None,
             help="imagefolder naming: sre2l (default) or rded"),
         arg("--maxcount", type=int, default=None, help="webdataset: samples per shard (default 10000)"))
def run_export(args: argparse.Namespace) -> int:
    if args.to != "imagefolder" and args.style is not None:
        raise UsageError("--style applies to --to imagefolder")
    if args.to != "webdataset" and args.maxcount is not None:
        raise UsageError("--maxcount applies to --to webdataset")

    from ..interop import export_imagefolder, export_tensor_files, export_webdataset

    with _stage(f"export {args.to}"):
        if args.to in ("tensors", "ddranking"):
            out = export_tensor_files(args.file, args.outdir, layout="mtt" if args.to == "tensors" else "ddranking")
        elif args.to == "webdataset":
            out = export_webdataset(args.file, args.outdir,
                                    **({} if args.maxcount is None else {"maxcount": args.maxcount}))
        else:
            out = export_imagefolder(args.file, args.outdir, style=args.style or "sre2l")
    print(f"wrote {out}")
    return 0


@command("publish", "write a Hugging Face Hub dataset folder (card, file, figures); upload it with --repo-id",
         arg("file", help=".dd file to publish (it must verify)"),
         arg("outdir", help="directory to write (empty or new)"),
         arg("--repo-id", default=None, help="upload the folder to this dataset repository (user/name), token from "
                                             "the usual Hugging Face login or HF_TOKEN"),
         arg("--name", default=None, help="pretty name on the card (default: the file's dataset name)"),
         arg("--license", default="unknown", help="Hub license id, e.g. cc-by-4.0 (default unknown)"),
         arg("--private", action="store_true", help="create the repository private"))
def run_publish(args: argparse.Namespace) -> int:
    from .publish import publish_folder, upload

    with _stage("publish"):
        out = publish_folder(args.file, args.outdir, repo_id=args.repo_id, pretty_name=args.name,
                             license=args.license)
    print(f"wrote {out}: " + ", ".join(sorted(p.name for p in out.iterdir())))
    if args.repo_id is not None:
        with _stage(f"upload {args.repo_id}"):
            try:
                url = upload(out, args.repo_id, private=args.private)
            except OSError:
                raise
            except Exception as exc:  # huggingface_hub's HTTP errors name the request and the Hub's answer
                raise OSError(f"upload to {args.repo_id} failed: {exc}") from None
        print(f"uploaded to {url}")
    return 0


@command("eval", "train students on the file as its recipe says (and on real baselines); report test accuracy",
         arg("file", help=".dd file (path or URL)"),
         arg("--test", required=True, help="real data to test on: mnist, digits, textures or lfw"),
         arg("--seeds", type=int, default=3, help="students per training set (default 3)"),
         arg("--baseline", action="append", choices=("random", "full"), default=[],
             help="also train on a random real subset of the same size, or on the full training split"),
         arg("--device", default="cpu", help="cpu (default) or cuda"),
         arg("--architecture", help="student network, e.g. convnet-d3, resnet18, resnetap10"),
         arg("--epochs", type=int), arg("--batch-size", type=int), arg("--lr", type=float),
         arg("--optimizer", choices=("sgd", "adamw", "adam")),
         arg("--schedule", choices=("cosine", "step", "constant")),
         arg("--augmentation", help="comma-separated: dsa, rrc+flip, flip, cutmix, none"),
         arg("--regime", choices=("hl", "sl", "sl+kd"), help="label regime (paper 002)"),
         arg("--temperature", type=float, help="KL temperature for sl and sl+kd"),
         arg("--teacher", help="teacher state dict (.safetensors, or .pt read with weights_only=True)"),
         arg("--teacher-architecture", help="teacher network (default: the student's)"),
         arg("--eval-every", type=int, default=0, help="also test every N epochs (for --curve)"),
         arg("--curve", metavar="PNG", help="draw the mean learning curves to PNG"),
         arg("--json", action="store_true", help="print one JSON object instead of a table"))
def run_eval(args: argparse.Namespace) -> int:
    from ..evaluation.evaluate import evaluate_file, results_table

    augmentation = None if args.augmentation is None else tuple(
        a.strip() for a in args.augmentation.split(",") if a.strip() and a.strip() != "none")
    report = evaluate_file(
        args.file, args.test, seeds=range(args.seeds), baselines=args.baseline, device=args.device,
        teacher=args.teacher, teacher_architecture=args.teacher_architecture, eval_every=args.eval_every,
        progress=not args.json, architecture=args.architecture, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, optimizer=args.optimizer, schedule=args.schedule, augmentation=augmentation,
        regime=args.regime, temperature=args.temperature)
    print(json.dumps(report, indent=2) if args.json else results_table(report))
    if args.curve:
        from .plots import learning_curve_png

        learning_curve_png(report, args.curve)
    return 0


def _views_summary(report: dict[str, Any]) -> str:
    kl = report["kl_to_teacher"]
    return (f"wrote {report['file']}: {report['views']} views ({report['rounds']} rounds, top-{report['k']} at "
            f"{report['bits']} bits)\n  label bits {report['label_bits']} ({report['label_bits_per_class']:.6g} per "
            f"class, {report['bits_per_view']:.4g} per view), {report['ratio_to_fp16']:.4g}x fewer than fp16 "
            f"per-view labels; mean KL to the unquantised teacher "
            f"{'unknown' if kl is None else format(kl, '.4g')} nats; bpc {report['bpc']!r}")


@command("relabel", "store a teacher's soft labels for V augmented views of every sample (FKD-style)",
         arg("file", help=".dd file to relabel"),
         arg("out", help=".dd file to write: the same sections plus the views"),
         arg("--teacher", required=True, help="teacher state dict (.safetensors, or .pt read with weights_only=True)"),
         arg("--arch", required=True, help="teacher network, e.g. convnet-d3, resnet18"),
         arg("--views", type=int, required=True, help="rounds of views: one view per sample each"),
         arg("--topk", type=int, required=True, help="teacher probabilities kept per view"),
         arg("--bits", type=int, required=True, help="quantisation levels 2^BITS"),
         arg("--batch-size", type=int, default=256, help="views per batch, CutMix partners within it (default 256)"),
         arg("--temperature", type=float, default=20.0, help="teacher softmax temperature (default 20)"),
         arg("--no-cutmix", action="store_true", help="crops and flips only"),
         arg("--seed", type=int, default=0, help="seed of the drawn augmentations"),
         arg("--device", default="cpu", help="cpu (default) or cuda"),
         arg("--json", action="store_true", help="print one JSON object"))
def run_relabel(args: argparse.Namespace) -> int:
    from ..evaluation.relabel import relabel
    from ..evaluation.teachers import load_teacher

    with open_dd(args.file) as dd:
        shape, num_classes = dd.dataset["sample_shape"], dd.num_classes
    teacher = load_teacher(args.teacher, args.arch, shape[0], num_classes, tuple(shape[1:]))
    report = relabel(args.file, args.out, teacher, rounds=args.views, k=args.topk, bits=args.bits,
                     batch_size=args.batch_size, temperature=args.temperature, mix=not args.no_cutmix,
                     seed=args.seed, device=args.device, progress=not args.json)
    print(json.dumps(report, indent=2) if args.json else _views_summary(report))
    return 0


@command("import-fkd", "add FKD / SRe2L relabel output (epoch_*/batch_*.tar) to a .dd file as views",
         arg("file", help=".dd file of the images the soft labels were made for, in ImageFolder order"),
         arg("fkd_dir", help="directory holding epoch_0/, epoch_1/, ..."),
         arg("out", help=".dd file to write"),
         arg("--topk", type=int, required=True, help="teacher probabilities kept per view"),
         arg("--bits", type=int, required=True, help="quantisation levels 2^BITS"),
         arg("--temperature", type=float, default=20.0, help="softmax temperature for the logits (default 20)"),
         arg("--fkd-seed", type=int, default=42, help="the relabel run's --fkd-seed (its batch order; default 42)"),
         arg("--epochs", type=int, default=None, help="import only the first N epochs (label pruning)"),
         arg("--json", action="store_true", help="print one JSON object"))
def run_import_fkd(args: argparse.Namespace) -> int:
    from ..evaluation.relabel import views_report
    from ..interop.fkd import import_fkd

    import_fkd(args.file, args.fkd_dir, args.out, k=args.topk, bits=args.bits, temperature=args.temperature,
               seed=args.fkd_seed, epochs=args.epochs, progress=not args.json)
    report = views_report(args.out)
    print(json.dumps(report, indent=2) if args.json else _views_summary(report))
    return 0


# --------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddformat", description="Read, check, convert and evaluate .dd distilled-dataset files.")
    parser.add_argument("--version", action="version", version=f"ddformat {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for c in COMMANDS.values():
        sub = subparsers.add_parser(c.name, help=c.help, description=c.help)
        for flags, options in c.arguments:
            sub.add_argument(*flags, **options)
        sub.set_defaults(run=c.run)
    return parser


def _fail(args: argparse.Namespace, message: str, status: int) -> int:
    print(f"ddformat {args.command}: error: {message}", file=sys.stderr)
    return status


def _warn(args: argparse.Namespace) -> Callable[..., None]:
    def show(message: Warning | str, *_: Any, **__: Any) -> None:
        print(f"ddformat {args.command}: warning: {message}", file=sys.stderr)
    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warn(args)
            return args.run(args)
    except (FormatError, ValueError) as exc:
        return _fail(args, str(exc), 1)
    except UsageError as exc:
        return _fail(args, str(exc), 2)
    except OSError as exc:
        return _fail(args, f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), 2)
    except KeyboardInterrupt:
        return 130
