"""The extractor interface: one ``nn.Module`` subclass per backbone, one config dataclass each.

How the pipeline uses an extractor (``Cls = avel.extractors.get(name)``)::

    ext = Cls.from_checkpoint(path, device="cuda", **config)   # or Cls.random_init(...)
    spec = ext.decode_spec          # CPU work done by the decoder (fps, resize, sample rate)
    plan = ext.plan                 # SamplingPlan: windows and the exact time of every row
    cut = ext.windows(decoded)      # one video's frames / samples -> windows (+ bounds, padded flag)
    rows = ext.extract(batch)       # batch of windows from many videos on the device -> features
    # rows: B x *ext.feature_shape; times from plan.row_times(cut.num_rows)

Tensor layouts
--------------
* Video extractors receive decoded frames as ``uint8`` RGB ``T x H x W x 3`` (one video, at
  ``plan.fps``, already resized on the CPU as ``decode_spec`` says). :meth:`Extractor.windows`
  cuts them into ``N x (window_frames + context_frames) x H x W x 3``; a batch for
  :meth:`Extractor.preprocess` is ``B x (window_frames + context_frames) x H x W x 3`` uint8 on the
  device (all windows in a batch share ``H x W``).
* Audio extractors receive a ``float32`` mono waveform ``S`` at ``plan.sample_rate``;
  :meth:`Extractor.windows` gives ``N x (window_samples + context_samples)``; a batch is
  ``B x (window_samples + context_samples)``.
* :meth:`Extractor.preprocess` (device side, batched) turns that batch into the model input
  documented per class; :meth:`Extractor.forward` maps the model input to ``B x *feature_shape``.

Windows follow :class:`avel.datasets.sampling.SamplingPlan`: row ``i`` covers units
``[i*step, i*step + window)``; an incomplete trailing window is dropped; an input shorter than
one window yields one padded window (video: the last frame repeated; audio: zeros), flagged by
``plan.is_padded``. Extractors that need frames after the window (RAFT flow needs ``window + 1``
frames for ``window`` flow fields) declare ``context_frames``; missing context frames at the
end of a video are filled by repeating the last frame.

Weights
-------
:meth:`Extractor.from_checkpoint` loads the official file(s) named in ``checkpoint_files``,
converts them to the module's key layout (:meth:`Extractor.convert_checkpoint`), verifies keys
and shapes (error listing missing / unexpected / mismatched keys and naming the expected file),
records the file sha256 in ``weights_sha256`` and returns the module in eval mode. Random
weights exist only through :meth:`Extractor.random_init` (``weights_sha256 == "random"``);
there is no silent fallback.

Configs and presets
-------------------
Each extractor has a frozen config dataclass (subclass of :class:`ExtractorConfig`). Class
attribute ``presets`` maps a preset name to field overrides: ``"full"`` is the faithful
configuration (the dataclass defaults), ``"tiny"`` a small one for tests and demos (same code,
fewer channels / smaller inputs; only ever used with random weights). Config keyword arguments
override the preset: ``Cls.random_init(preset="tiny", hop_s=0.32)``.
"""

from __future__ import annotations

import dataclasses
import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
from torch import nn
from typing_extensions import Self

from avel.datasets.config_schema import dataclass_from_dict
from avel.datasets.fileio import RANDOM_WEIGHTS  # weights_sha256 of a module built by random_init
from avel.datasets.sampling import SamplingPlan

Modality = Literal["video", "audio"]

NO_WEIGHTS = "uninitialized"
"""``weights_sha256`` of a module built by :meth:`Extractor.build` (e.g. on the meta device)."""


class _InitSkipped(torch.overrides.TorchFunctionMode):
    """Random initialisers become no-ops: on meta tensors only (``meta_only``, see
    :func:`on_meta_device`) or on every tensor (:func:`skipping_random_init`)."""

    # nn.init's random initialisers and the Tensor methods they call: they only fill values
    SKIPPED = frozenset(
        {
            nn.init.uniform_,
            nn.init.normal_,
            nn.init.trunc_normal_,
            nn.init.kaiming_uniform_,
            nn.init.kaiming_normal_,
            nn.init.xavier_uniform_,
            nn.init.xavier_normal_,
            nn.init.orthogonal_,
            torch.Tensor.uniform_,
            torch.Tensor.normal_,
        }
    )

    def __init__(self, *, meta_only: bool) -> None:
        super().__init__()
        self.meta_only = meta_only

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.SKIPPED:
            tensor = args[0] if args else kwargs.get("tensor")  # nn.init passes its tensor by keyword
            if isinstance(tensor, torch.Tensor) and (tensor.is_meta or not self.meta_only):
                return tensor
        return func(*args, **kwargs)


def on_meta_device(device: str | torch.device) -> typing.ContextManager[Any]:
    """``torch.device(device)``, and for the meta device random initialisers skipped: a meta
    tensor holds no values, and torch's first random fill of one imports its decompositions
    (0.8-1.3 s of start-up measured on the 2-core machine for a meta I3D)."""
    import contextlib

    stack = contextlib.ExitStack()
    stack.enter_context(torch.device(device))
    if torch.device(device).type == "meta":
        stack.enter_context(_InitSkipped(meta_only=True))
    return stack


def skipping_random_init() -> typing.ContextManager[Any]:
    """Modules built inside get no random initial values (their tensors hold whatever memory
    they were given): only for a module whose every parameter and persistent buffer is then
    overwritten by a strict ``load_state_dict``, as :meth:`Extractor.from_checkpoint` does.
    Deterministic values computed at build time (e.g. VGGish's mel matrix, non-persistent
    buffers) are kept. Saves the initialisers' time (0.1-0.15 s for I3D on the 2-core machine,
    more for the large backbones)."""
    return _InitSkipped(meta_only=False)


@dataclass(frozen=True)
class ExtractorConfig:
    """Base of all extractor configs. Subclasses add their own fields (all with defaults = full).

    Args:
        preset: name of the preset the config was made from (informational, recorded in
            manifests): ``"full"`` or ``"tiny"``.
    """

    preset: str = "full"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}


@dataclass(frozen=True)
class DecodeSpec:
    """What the CPU decoder does before handing data to an extractor.

    Args:
        modality: ``"video"`` or ``"audio"``.
        fps: video; frames per second to resample to (equals ``plan.fps``).
        short_side: video; resize (bilinear) so the shorter side has this many pixels,
            keeping the aspect ratio; ``None`` = no short-side resize.
        size_hw: video; resize (bilinear) to exactly ``(H, W)`` ignoring the aspect ratio;
            ``None`` = not used. At most one of ``short_side`` / ``size_hw`` is set.
        center_crop: video; side of a square centre crop taken after the resize on the CPU,
            ``None`` = no crop (the extractor crops on the device, e.g. flow needs full frames).
        sample_rate: audio; samples per second (equals ``plan.sample_rate``), mono float32.
        frame_selection: video; which native frame fills each output slot at ``fps``:
            ``"ffmpeg_fps"`` (the frame nearest the slot time, as ffmpeg's ``fps`` filter with
            its default ``round=near``: what video_features' re-encode does) or ``"previous"``
            (the last frame at or before the slot time). See :mod:`avel.pipeline.decode`.
        resize: video; ``"pil"``: one PIL bilinear resize of the full decoded frame to
            ``short_side`` / ``size_hw`` (video_features, Keras); ``"torch"``: the decoder scales
            to ``short_side`` and torch's antialiased bilinear filter resizes further.
    """

    modality: Modality
    fps: float | None = None
    short_side: int | None = None
    size_hw: tuple[int, int] | None = None
    center_crop: int | None = None
    sample_rate: int | None = None
    frame_selection: str = "previous"
    resize: str = "torch"

    def __post_init__(self) -> None:
        if self.short_side is not None and self.size_hw is not None:
            raise ValueError(f"DecodeSpec: set at most one of short_side / size_hw, got {self}")
        check_frame_options("DecodeSpec", self.frame_selection, self.resize)


FRAME_SELECTIONS = ("ffmpeg_fps", "previous")
"""Frame-selection rules of the decoder (:func:`avel.pipeline.decode.frame_indices_for_fps`)."""

RESIZES = ("pil", "torch")
"""Resize paths of the decoder (see :class:`DecodeSpec`)."""


def check_frame_options(owner: str, frame_selection: str, resize: str) -> None:
    """Raise ``ValueError`` naming ``owner`` for an unknown frame-selection rule or resize path."""
    if frame_selection not in FRAME_SELECTIONS:
        raise ValueError(f"{owner}: frame_selection must be one of {list(FRAME_SELECTIONS)}, got {frame_selection!r}")
    if resize not in RESIZES:
        raise ValueError(f"{owner}: resize must be one of {list(RESIZES)}, got {resize!r}")


@dataclass
class Windows:
    """One input cut into windows.

    Attributes:
        data: video ``N x (window + context) x H x W x 3`` uint8, audio ``N x window_samples``.
        bounds: ``N x 2`` int64 [start, end) in frames or samples (the plan's row bounds).
        padded: True when the input was shorter than one window (then ``N == 1``).
    """

    data: torch.Tensor
    bounds: np.ndarray
    padded: bool

    @property
    def num_rows(self) -> int:
        return int(self.data.shape[0])


@runtime_checkable
class VideoWindowFields(Protocol):
    """Config fields from which :attr:`Extractor.plan` derives a video plan."""

    @property
    def fps(self) -> float: ...

    @property
    def window_frames(self) -> int: ...

    @property
    def stride_frames(self) -> int: ...


@runtime_checkable
class AudioWindowFields(Protocol):
    """Config fields from which :attr:`Extractor.plan` derives an audio plan."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def window_s(self) -> float: ...

    @property
    def hop_s(self) -> float: ...


PROBE_SIDE = 224
"""Frame side of the probe window :meth:`Extractor.traced_feature_shape` feeds a video extractor
whose ``decode_spec`` fixes no frame size."""

ConfigT = TypeVar("ConfigT", bound=ExtractorConfig)
"""The config dataclass of an extractor: ``class VGG19Extractor(Extractor[VGG19Config])``."""


def merge_config(
    config_cls: type[ConfigT], presets: Mapping[str, Mapping[str, Any]], preset: str = "full", **overrides: Any
) -> ConfigT:
    """Build ``config_cls`` from a preset plus keyword overrides, rejecting unknown keys.

    Values are type-checked against the field annotations by the package's one dict -> dataclass
    rule (:func:`avel.datasets.config_schema.dataclass_from_dict`: ``fps: "x"`` is a
    ``ValueError`` naming the config class and the key; an int is accepted for a float, a list
    for a tuple, as YAML writes them).
    """
    if preset not in presets:
        raise ValueError(f"{config_cls.__name__}: unknown preset {preset!r}; expected one of {sorted(presets)}")
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(
            f"{config_cls.__name__}: unknown config keys {unknown}; expected a subset of {sorted(fields - {'preset'})}"
        )
    values = {**presets[preset], **overrides, "preset": preset}
    try:
        return typing.cast(ConfigT, dataclass_from_dict(config_cls, values))
    except ValueError as e:
        raise ValueError(f"{config_cls.__name__}: {e}") from None


def combined_sha256(sha256: Mapping[str, str]) -> str:
    """``weights_sha256`` of checkpoint files ``{role: hex sha256}``: the hash of a single file,
    ``role=sha;role=sha`` for several."""
    if len(sha256) == 1:
        return next(iter(sha256.values()))
    return ";".join(f"{r}={h}" for r, h in sha256.items())


@dataclass
class CheckpointReport:
    """Result of :meth:`Extractor.check_checkpoint`.

    Attributes:
        extractor: registry name.
        files: role -> file read.
        expected_files: role -> official file name.
        sha256: role -> hex sha256 of the file.
        missing / unexpected: module keys absent from / extra in the converted checkpoint.
        mismatched: ``(key, expected_shape, checkpoint_shape)``.
        state: the converted state dict (module keys).
        info: what :meth:`Extractor.inspect_checkpoint` read from the files (e.g. I3D's key
            layout per stream); handed to :meth:`Extractor.adopt_checkpoint`.
    """

    extractor: str
    files: dict[str, Path]
    expected_files: dict[str, str]
    sha256: dict[str, str]
    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple]
    state: dict[str, torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def weights_sha256(self) -> str:
        """The file's sha256, or ``role=sha;role=sha`` for several files."""
        return combined_sha256(self.sha256)

    def require_same(self, extractor: str, files: Mapping[str, Path]) -> None:
        """Raise ``ValueError`` unless this report is ``extractor``'s check of exactly ``files``
        (role -> path), so a report handed to a later load cannot stand for other weights."""
        mine = {r: Path(p).resolve() for r, p in self.files.items()}
        if self.extractor != extractor or mine != {r: Path(p).resolve() for r, p in files.items()}:
            raise ValueError(
                f"{extractor}: the checkpoint report given is {self.extractor}'s check of "
                f"{sorted(map(str, mine.values()))}, not of {sorted(str(p) for p in files.values())}"
            )

    def error(self) -> Exception:
        from avel.extractors.weights import CheckpointMismatch, describe_mismatch

        msg = describe_mismatch(
            self.missing,
            self.unexpected,
            self.mismatched,
            extractor=self.extractor,
            expected_file=", ".join(self.expected_files.values()),
        )
        msg += "\n  files read: " + ", ".join(f"{r}={p}" for r, p in self.files.items())
        return CheckpointMismatch(msg, missing=self.missing, unexpected=self.unexpected, mismatched=self.mismatched)


class Extractor(nn.Module, ABC, Generic[ConfigT]):
    """Base class of every feature extractor, generic over its config dataclass.

    A subclass names its config as the type parameter, ``class VGG19Extractor(Extractor[VGG19Config])``:
    ``self.config`` is then typed as that class for readers and type checkers, and
    ``config_cls`` is set from it.

    Class attributes a subclass sets:
        name: registry name (e.g. ``"i3d_rgb"``).
        modality: ``"video"`` or ``"audio"``.
        config_cls: its config dataclass (subclass of :class:`ExtractorConfig`); taken from the
            type parameter when not set.
        presets: preset name -> field overrides; must contain ``"full"`` and ``"tiny"``.
        checkpoint_files: role -> official file name, e.g. ``{"model": "vgg19-dcbb9e9d.pth"}``.
            Several roles (e.g. ``rgb``/``flow``/``raft``) mean several files; then
            ``from_checkpoint`` takes a directory holding the official names or a mapping
            role -> path.
        context_frames: video only; extra frames needed after each window (see module doc).
        context_samples: audio only; extra samples needed after each window (zero-filled past
            the end of the input), e.g. VGGish's last STFT frame reaches 240 samples past 0.96 s.
        cpu_batch_size / gpu_batch_size: the windows per device call the pipeline uses when the
            user gives no ``batch_size`` (a CPU wants small batches: the memory-bound layers
            stay in cache; a GPU wants large ones to fill it). Defaults 4 / 32.

    The contract: a new extractor is a config dataclass and a subclass implementing
    ``__init__(self, config)`` (build the layers) and :meth:`forward` (abstract). The rest is
    derived and overridden only where the default does not fit:

    * :attr:`plan` from the config's ``fps`` / ``window_frames`` / ``stride_frames`` (video) or
      ``sample_rate`` / ``window_s`` / ``hop_s`` (audio);
    * :attr:`decode_spec`: the plan's fps (video, native frame size) or sample rate (audio);
      override to resize or crop on the CPU;
    * :attr:`feature_shape`: traced once per module by running one window through
      :meth:`extract` on the meta device (:meth:`traced_feature_shape`); override with a formula
      when tracing is slow (I3D's RAFT);
    * :meth:`preprocess`: identity (windows are the model input);
    * :meth:`convert_checkpoint`: a single file whose keys match the ``state_dict``.
    """

    name: ClassVar[str] = ""
    modality: ClassVar[Modality] = "video"
    config_cls: ClassVar[type[ExtractorConfig]] = ExtractorConfig
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {"full": {}, "tiny": {}}
    checkpoint_files: ClassVar[Mapping[str, str]] = {}
    context_frames: ClassVar[int] = 0
    context_samples: ClassVar[int] = 0
    cpu_batch_size: ClassVar[int] = 4
    gpu_batch_size: ClassVar[int] = 32

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in cls.__dict__.get("__orig_bases__", ()):
            origin, args = typing.get_origin(base), typing.get_args(base)
            if not (isinstance(origin, type) and issubclass(origin, Extractor) and args):
                continue
            param = args[0]
            if not (isinstance(param, type) and issubclass(param, ExtractorConfig)):
                continue  # still generic (a shared base of several extractors)
            declared = cls.__dict__.get("config_cls")
            if declared is not None and declared is not param:
                raise TypeError(
                    f"{cls.__name__}: config_cls {declared.__name__} differs from its type parameter {param.__name__}"
                )
            cls.config_cls = param

    def __init__(self, config: ConfigT) -> None:
        super().__init__()
        if not isinstance(config, self.config_cls):
            raise TypeError(f"{type(self).__name__} needs a {self.config_cls.__name__}, got {type(config).__name__}")
        self.config: ConfigT = config
        self.weights_sha256: str = NO_WEIGHTS

    # -- description -----------------------------------------------------------------------
    @property
    def plan(self) -> SamplingPlan:
        """The sampling plan, from the config's window fields (see the class doc)."""
        c = self.config
        if self.modality == "video" and isinstance(c, VideoWindowFields):
            return SamplingPlan.video(fps=c.fps, window_frames=c.window_frames, stride_frames=c.stride_frames)
        if self.modality == "audio" and isinstance(c, AudioWindowFields):
            return SamplingPlan.audio(sample_rate=c.sample_rate, window_s=c.window_s, hop_s=c.hop_s)
        fields = "fps, window_frames, stride_frames" if self.modality == "video" else "sample_rate, window_s, hop_s"
        raise TypeError(
            f"{type(self).__name__}: {type(c).__name__} lacks the {self.modality} window fields "
            f"({fields}); add them or override plan"
        )

    @property
    def decode_spec(self) -> DecodeSpec:
        """CPU-side decoding the pipeline performs before :meth:`windows`. Default: frames at
        ``plan.fps`` at their native size (video), mono at ``plan.sample_rate`` (audio)."""
        plan = self.plan
        if self.modality == "video":
            return DecodeSpec("video", fps=plan.fps)
        return DecodeSpec("audio", sample_rate=plan.sample_rate)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """Shape of one output row, e.g. ``(1024,)`` or ``(7, 7, 512)``. Default:
        :meth:`traced_feature_shape`, computed once per module."""
        shape = self.__dict__.get("_traced_shape")
        if shape is None:
            shape = self.__dict__["_traced_shape"] = self.traced_feature_shape()
        return shape

    def traced_feature_shape(self) -> tuple[int, ...]:
        """Row shape found by running one window of zeros through :meth:`extract` on a copy of
        this module on the meta device (no memory, no weights read). The window is what
        :meth:`windows` would cut: ``1 x (window + context) x H x W x 3`` uint8 with ``H x W``
        from ``decode_spec`` (``size_hw``, else ``center_crop``, else ``short_side`` square, else
        :data:`PROBE_SIDE`), or ``1 x (window_samples + context_samples)`` float32."""
        with on_meta_device("meta"):
            probe = type(self)(self.config)
        probe.to("meta")  # buffers a subclass created on an explicit device
        plan, spec = self.plan, self.decode_spec
        if self.modality == "video":
            h, w = spec.size_hw or (spec.center_crop or spec.short_side or PROBE_SIDE,) * 2
            x = torch.zeros(1, plan.window_units + self.context_frames, h, w, 3, dtype=torch.uint8, device="meta")
        else:
            x = torch.zeros(1, plan.window_units + self.context_samples, dtype=torch.float32, device="meta")
        return tuple(int(n) for n in probe.extract(x).shape[1:])

    @classmethod
    def make_config(cls, preset: str = "full", **overrides: Any) -> ConfigT:
        """Config from a preset (``"full"`` / ``"tiny"``) and keyword overrides."""
        # config_cls is the type parameter (__init_subclass__); a ClassVar cannot be typed with it.
        return typing.cast(ConfigT, merge_config(cls.config_cls, cls.presets, preset, **overrides))

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary for manifests and ``avel extractors list``."""
        return {
            "name": self.name,
            "modality": self.modality,
            "feature_shape": list(self.feature_shape),
            "plan": self.plan.to_dict(),
            "decode": dataclasses.asdict(self.decode_spec),
            "config": self.config.to_dict(),
            "weights_sha256": self.weights_sha256,
            "provenance": self.provenance(),
        }

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def build(cls, *, device: str | torch.device = "cpu", preset: str = "full", **config: Any) -> Self:
        """The module with uninitialised weights (``weights_sha256 == "uninitialized"``).

        Use ``device="meta"`` to inspect a full configuration without allocating memory.
        """
        cfg = cls.make_config(preset, **config)
        with on_meta_device(device):
            module = cls(cfg)
        module.weights_sha256 = NO_WEIGHTS
        return module.eval()

    @classmethod
    def random_init(
        cls, *, device: str | torch.device = "cpu", seed: int = 0, preset: str = "full", **config: Any
    ) -> Self:
        """The module with random weights, explicitly marked ``weights_sha256 == "random"``.

        Args:
            device: where the module lives.
            seed: seed of a private generator (the global RNG state is restored afterwards).
            preset: ``"full"`` or ``"tiny"``.
            **config: config field overrides.
        """
        cfg = cls.make_config(preset, **config)
        devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            module = cls(cfg)
            module._randomize_buffers()
        module.to(device)
        module.weights_sha256 = RANDOM_WEIGHTS
        return module.eval()

    def _randomize_buffers(self) -> None:
        """Give BatchNorm running statistics non-trivial values so random models test them."""
        for m in self.modules():
            if not isinstance(m, nn.modules.batchnorm._BatchNorm):
                continue
            with torch.no_grad():
                if m.running_mean is not None and m.running_var is not None:  # track_running_stats
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
                if m.affine:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.1, 0.1)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path | Mapping[str, str | Path],
        *,
        device: str | torch.device = "cpu",
        preset: str = "full",
        checked: CheckpointReport | None = None,
        **config: Any,
    ) -> Self:
        """A ready eval module with verified official weights.

        Args:
            path: the checkpoint file; for multi-file extractors a directory holding the
                official file names of ``checkpoint_files`` or a mapping role -> file.
            device: where the module lives.
            preset: config preset (``"full"`` for official weights).
            checked: what :meth:`check_checkpoint` returned for the same ``path`` and config
                earlier in this process (e.g. the driver's check before a run): its loaded
                tensors are used instead of reading and hashing the files again.
            **config: config field overrides.

        Raises:
            avel.extractors.weights.CheckpointMismatch: missing / unexpected / mis-shaped keys.
            FileNotFoundError: a file is missing (the message names the expected file).
        """
        cfg = cls.make_config(preset, **config)
        report = cls._reuse_or_check(path, checked, preset=preset, **config)
        if not report.ok:
            raise report.error()
        with torch.device(device), skipping_random_init():  # every value is loaded below
            module = cls(cfg)
        expected = module.state_dict()
        module.load_state_dict({k: v for k, v in report.state.items() if k in expected}, strict=True)
        module.adopt_checkpoint(report.info)
        module.weights_sha256 = report.weights_sha256
        module.to(device)
        return module.eval()

    @classmethod
    def _reuse_or_check(
        cls,
        path: str | Path | Mapping[str, str | Path],
        checked: CheckpointReport | None,
        *,
        preset: str,
        **config: Any,
    ) -> CheckpointReport:
        """``checked`` when it is this extractor's report on the files ``path`` names, else a new check."""
        if checked is None:
            return cls.check_checkpoint(path, preset=preset, **config)
        from avel.extractors import weights

        cfg = cls.make_config(preset, **config)
        files = weights.resolve_checkpoint_files(path, cls.checkpoint_files, cls.roles_for(cfg), extractor=cls.name)
        checked.require_same(cls.name, files)
        return checked

    @classmethod
    def check_checkpoint(
        cls, path: str | Path | Mapping[str, str | Path], *, preset: str = "full", **config: Any
    ) -> CheckpointReport:
        """Load and compare checkpoint file(s) with the module's keys and shapes (meta device).

        Never raises for a key/shape mismatch (see :class:`CheckpointReport`); missing or
        unreadable files raise ``FileNotFoundError`` / ``ValueError``.
        """
        from avel.extractors import weights

        cfg = cls.make_config(preset, **config)
        files = weights.resolve_checkpoint_files(path, cls.checkpoint_files, cls.roles_for(cfg), extractor=cls.name)
        states = {role: weights.load_state_file(p) for role, p in files.items()}
        info = cls.inspect_checkpoint(states, files, cfg)
        with on_meta_device("meta"):  # compare keys and shapes without allocating anything
            module = cls(cfg)
        state = cls.convert_checkpoint(states, cfg)
        missing, unexpected, mismatched = weights.compare_state_dicts(
            module.state_dict(), state, ignore_prefixes=cls.ignored_checkpoint_prefixes(cfg)
        )
        return CheckpointReport(
            extractor=cls.name,
            files=files,
            expected_files={r: cls.checkpoint_files[r] for r in files},
            sha256={r: weights.checkpoint_sha256(p) for r, p in files.items()},
            missing=missing,
            unexpected=unexpected,
            mismatched=mismatched,
            state=state,
            info=info,
        )

    @classmethod
    def inspect_checkpoint(
        cls, states: Mapping[str, Mapping[str, torch.Tensor]], files: Mapping[str, Path], config: ConfigT
    ) -> dict[str, Any]:
        """Facts about the loaded file(s) that settings depend on (default: none). Raise
        ``ValueError`` naming the file when they cannot be told (e.g. an ambiguous key layout)."""
        return {}

    def adopt_checkpoint(self, info: Mapping[str, Any]) -> None:
        """Apply :meth:`inspect_checkpoint`'s facts after the weights are loaded (default: nothing)."""

    def provenance(self) -> dict[str, Any]:
        """Settings chosen at load time, recorded in the store stream's provenance (default: none)."""
        return {}

    @classmethod
    def roles_for(cls, config: ConfigT) -> tuple[str, ...]:
        """Checkpoint roles this config needs (default: all of ``checkpoint_files``)."""
        return tuple(cls.checkpoint_files)

    @classmethod
    def convert_checkpoint(
        cls, states: Mapping[str, Mapping[str, torch.Tensor]], config: ConfigT
    ) -> dict[str, torch.Tensor]:
        """Map the loaded file(s) (role -> state dict) onto this module's ``state_dict`` keys.

        Default: a single file whose keys already match.
        """
        if len(states) != 1:
            raise NotImplementedError(f"{cls.__name__}: several checkpoint files need convert_checkpoint")
        return dict(next(iter(states.values())))

    @classmethod
    def ignored_checkpoint_prefixes(cls, config: ConfigT) -> tuple[str, ...]:
        """Converted-checkpoint key prefixes that are allowed but not loaded (e.g. ``classifier.``)."""
        return ()

    # -- data ------------------------------------------------------------------------------
    def windows(self, decoded: torch.Tensor | np.ndarray, plan: SamplingPlan | None = None) -> Windows:
        """Cut one input into the plan's windows.

        Args:
            decoded: video ``T x H x W x 3`` uint8 RGB at ``plan.fps``; audio ``S`` float32 mono
                at ``plan.sample_rate``.
            plan: defaults to :attr:`plan`.
        """
        plan = plan or self.plan
        x = torch.as_tensor(decoded)
        if plan.modality == "video":
            return cut_video_windows(x, plan, context_frames=self.context_frames)
        return cut_audio_windows(x, plan, context_samples=self.context_samples)

    def preprocess(self, batch: torch.Tensor) -> Any:
        """Device-side, batched preprocessing of windows -> the model input of :meth:`forward`
        (a tensor, or a dict of tensors for multi-stream models such as ``i3d``). Default: the
        windows themselves."""
        return batch

    @abstractmethod
    def forward(self, x: Any) -> torch.Tensor:
        """The model input of :meth:`preprocess` -> ``B x *feature_shape`` rows."""

    def fuse_for_inference(self) -> Extractor:
        """Rewrite the module for faster inference with the same rows up to float rounding
        (e.g. BatchNorm folded into convolutions), in place; returns ``self``. Called by the
        extraction pipeline after loading; the module is then for inference only. Default:
        nothing to fuse."""
        return self

    @torch.no_grad()
    def extract(self, batch: torch.Tensor) -> torch.Tensor:
        """``forward(preprocess(batch))`` without gradients: ``B x *feature_shape`` float32."""
        return self.forward(self.preprocess(batch)).float()


def cut_video_windows(frames: torch.Tensor, plan: SamplingPlan, *, context_frames: int = 0) -> Windows:
    """``T x H x W x 3`` uint8 frames -> :class:`Windows` of ``N x (window + context) x H x W x 3``.

    Short videos are padded by repeating the last frame; so are missing context frames at the end.
    """
    if plan.modality != "video":
        raise ValueError(f"cut_video_windows needs a video plan, got {plan.describe()}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"video frames must be T x H x W x 3 (RGB), got shape {tuple(frames.shape)}")
    if frames.dtype != torch.uint8:
        raise ValueError(f"video frames must be uint8, got {frames.dtype}")
    t = int(frames.shape[0])
    if t == 0:
        raise ValueError("video has no frames")
    n = plan.num_rows(t)
    bounds = plan.window_bounds(n)
    length = plan.window_units + context_frames
    idx = torch.as_tensor(bounds[:, :1], dtype=torch.long) + torch.arange(length)  # N x L
    idx = idx.clamp_(max=t - 1)
    return Windows(frames[idx], bounds, plan.is_padded(t))


def cut_audio_windows(
    wave: torch.Tensor, plan: SamplingPlan, *, context_samples: int = 0, copy: bool = True
) -> Windows:
    """``S`` float mono waveform -> :class:`Windows` of ``N x (window_samples + context_samples)``.

    A short input is zero-padded to one window; context samples past the end are zeros.
    ``copy=False`` returns a strided view over the (padded) waveform instead of N separate
    windows: overlapping windows share memory (15600-sample windows every 5120 samples are 3x
    the waveform when copied), so copy a slice before changing it in place.
    """
    if plan.modality != "audio":
        raise ValueError(f"cut_audio_windows needs an audio plan, got {plan.describe()}")
    if wave.ndim != 1:
        raise ValueError(f"audio must be a 1-D mono waveform, got shape {tuple(wave.shape)}")
    if not wave.is_floating_point():
        raise ValueError(f"audio must be floating point, got {wave.dtype}")
    s = int(wave.shape[0])
    w = plan.window_units
    padded = plan.is_padded(s)
    n = plan.num_rows(s)
    bounds = plan.window_bounds(n)
    need = int(bounds[-1, 1]) + context_samples
    if need > s:
        wave = torch.nn.functional.pad(wave, (0, need - s))
    data = wave.unfold(0, w + context_samples, plan.step_units)[:n]
    return Windows(data.contiguous() if copy else data, bounds, padded)
