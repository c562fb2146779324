"""Window geometry of Convolution and Pooling: every size per axis, every pad per side.

A ConvolutionParam or PoolingParam states each size in one form (specs/zoo.proto):
kernel_size | kernel_h + kernel_w; stride | stride_h + stride_w; dilation | dilation_h +
dilation_w (Convolution only); pad | pad_h/pad_w | pad_top/pad_bottom/pad_left/pad_right.
`resolve` checks that and returns one `Window`, which is what the reference (and the
converters) read, so the forms are interpreted in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import LayerError

PAD_SIDES = ("pad_top", "pad_bottom", "pad_left", "pad_right")


@dataclass(frozen=True)
class Window:
    kh: int
    kw: int
    sh: int = 1
    sw: int = 1
    pad_top: int = 0
    pad_bottom: int = 0
    pad_left: int = 0
    pad_right: int = 0
    dh: int = 1
    dw: int = 1

    @property
    def square(self) -> bool:
        """One kernel, stride and dilation for both axes."""
        return self.kh == self.kw and self.sh == self.sw and self.dh == self.dw

    @property
    def symmetric(self) -> bool:
        """One pad on all four sides (the form the 2016 engines take)."""
        return len({self.pad_top, self.pad_bottom, self.pad_left, self.pad_right}) == 1

    @property
    def pads(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right)."""
        return self.pad_top, self.pad_bottom, self.pad_left, self.pad_right

    @property
    def span_h(self) -> int:
        return self.dh * (self.kh - 1) + 1

    @property
    def span_w(self) -> int:
        return self.dw * (self.kw - 1) + 1


def _has(p, name: str) -> bool:
    return any(f.name == name for f in p.DESCRIPTOR.fields) and p.HasField(name)


def _pair(p, both: str, h: str, w: str, default: int | None) -> tuple[int, int] | None:
    """(h, w) from `both` or from `h` and `w` (both required); default when none is set."""
    has_both, has_h, has_w = _has(p, both), _has(p, h), _has(p, w)
    if has_both and (has_h or has_w):
        raise LayerError(f"{both} and {h if has_h else w} both set: state {both} or {h} and {w}")
    if has_h != has_w:
        raise LayerError(f"{h if has_h else w} is set without {w if has_h else h}: "
                         "state both, or " + both)
    if has_h:
        return int(getattr(p, h)), int(getattr(p, w))
    if has_both or default is None:
        v = int(getattr(p, both))
        return (v, v) if has_both else None
    return default, default


def _pads(p) -> tuple[int, int, int, int]:
    forms = [f for f, names in (("pad", ("pad",)), ("pad_h/pad_w", ("pad_h", "pad_w")),
                                ("pad_top/pad_bottom/pad_left/pad_right", PAD_SIDES))
             if any(_has(p, n) for n in names)]
    if len(forms) > 1:
        raise LayerError(f"padding is stated twice ({' and '.join(forms)}): use one form")
    if _has(p, "pad"):
        return (int(p.pad),) * 4
    if _has(p, "pad_h") or _has(p, "pad_w"):
        return int(p.pad_h), int(p.pad_h), int(p.pad_w), int(p.pad_w)
    return tuple(int(getattr(p, s)) for s in PAD_SIDES)   # unset sides read 0


def resolve(p, dilation: bool) -> Window:
    """The window of a ConvolutionParam (dilation=True) or PoolingParam, checked."""
    kernel = _pair(p, "kernel_size", "kernel_h", "kernel_w", None)
    if kernel is None:
        field = "convolution_param" if dilation else "pooling_param"
        raise LayerError(f"{field}.kernel_size is required (or kernel_h and kernel_w)")
    stride = _pair(p, "stride", "stride_h", "stride_w", 1)
    dil = _pair(p, "dilation", "dilation_h", "dilation_w", 1) if dilation else (1, 1)
    for name, (a, b) in (("kernel", kernel), ("stride", stride), ("dilation", dil)):
        if a <= 0 or b <= 0:
            raise LayerError(f"{name} sizes must be > 0, got {a}x{b}")
    pads = _pads(p)
    if min(pads) < 0:
        raise LayerError(f"padding must be >= 0, got (top, bottom, left, right) = {pads}")
    return Window(kernel[0], kernel[1], stride[0], stride[1], *pads, dil[0], dil[1])


def geometry_fields_set(p) -> list[str]:
    """The geometry fields a PoolingParam states (global pooling takes none)."""
    names = ("kernel_size", "kernel_h", "kernel_w", "stride", "stride_h", "stride_w",
             "pad", "pad_h", "pad_w") + PAD_SIDES
    return [n for n in names if _has(p, n)]
