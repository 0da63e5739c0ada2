"""Named registries: how a model spec refers to code (blocks, norms, activations, necks, heads, presets).

A model spec is plain data, so it names every class it uses instead of holding it. A :class:`Registry`
maps names to classes (or factories) and back. A class that was never registered is still nameable as
``"module:QualName"`` (e.g. ``"my_project.blocks:GhostBlock"``); such a name resolves again only once that
module has been imported by the program -- a checkpoint never makes cspdet import code by itself.

    >>> from cspdet.models import BLOCKS
    >>> BLOCKS.name_of(BLOCKS.get("resnet"))
    'resnet'
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from torch import nn

from .blocks import DarknetBottleneck, ResNetBottleneck, ResNeXtBottleneck
from .layers import YoloxBatchNorm2d

__all__ = ["ACTIVATIONS", "BACKBONE_KINDS", "BLOCKS", "HEADS", "NECKS", "NORMS", "Registry", "SpecError", "STAGES",
           "leaky_relu_01"]

T = TypeVar("T")


class SpecError(ValueError):
    """A model spec that cannot be built, written or read; ``str(err)`` names the field and the problem."""


class Registry(Generic[T]):
    """A name -> object table with reverse lookup.

    Args:
        kind: what the entries are ("block", "activation", ...), used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._by_name: dict[str, T] = {}
        self._names: dict[int, str] = {}  # id(obj) -> first name it was registered under

    def register(self, name: str, obj: T, *, overwrite: bool = False) -> T:
        """Add ``obj`` under ``name`` and return it. Re-registering a name needs ``overwrite=True``."""
        if not isinstance(name, str) or not name or ":" in name:
            raise SpecError(f"{self.kind} name must be a non-empty string without ':', got {name!r}")
        if name in self._by_name and self._by_name[name] is not obj and not overwrite:
            raise SpecError(f"{self.kind} {name!r} is already registered (pass overwrite=True to replace it)")
        self._by_name[name] = obj
        self._names.setdefault(id(obj), name)
        return obj

    def unregister(self, name: str) -> T:
        """Remove ``name`` (and return its object): for plugins and tests that register something for a while."""
        if name not in self._by_name:
            raise SpecError(f"{self.kind} {name!r} is not registered")
        obj = self._by_name.pop(name)
        if self._names.get(id(obj)) == name:
            others = [n for n, o in self._by_name.items() if o is obj]
            if others:
                self._names[id(obj)] = others[0]
            else:
                del self._names[id(obj)]
        return obj

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def names(self) -> list[str]:
        return list(self._by_name)

    def get(self, name: str) -> T:
        """The object named ``name``: a registered name, or ``"module:QualName"`` of an imported module."""
        if name in self._by_name:
            return self._by_name[name]
        if isinstance(name, str) and ":" in name:
            module_name, _, qualname = name.partition(":")
            module = sys.modules.get(module_name)
            if module is None:
                raise SpecError(
                    f"{self.kind} {name!r}: module {module_name!r} is not imported; import it (or register the "
                    f"{self.kind} under a name) before building this model"
                )
            obj: Any = module
            try:
                for part in qualname.split("."):
                    obj = getattr(obj, part)
            except AttributeError:
                raise SpecError(f"{self.kind} {name!r}: {module_name} has no {qualname!r}") from None
            return obj
        hint = difflib.get_close_matches(str(name), self._by_name, n=1)
        raise SpecError(f"unknown {self.kind} {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                        + f" (registered: {', '.join(self._by_name)})")

    def name_of(self, obj: Any) -> str:
        """The name a spec stores for ``obj``: its registered name, else ``"module:QualName"``.

        Raises:
            SpecError: ``obj`` is a lambda or a local function/class, which no name can find again.
        """
        if id(obj) in self._names:
            return self._names[id(obj)]
        module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
        if not module or not qualname or "<" in qualname:
            raise SpecError(
                f"{self.kind} {obj!r} has no importable name (a lambda, a partial or a local definition); "
                f"register it with {self.kind.upper()}S.register(name, obj) -- e.g. "
                f"cspdet.models.register_{self.kind}('my_{self.kind}', obj) -- so a spec can refer to it"
            )
        return f"{module}:{qualname}"


def leaky_relu_01() -> nn.Module:
    """LeakyReLU with slope 0.1 (Darknet / YOLOX ``lrelu``); ``nn.LeakyReLU`` itself has timm's 0.01."""
    return nn.LeakyReLU(0.1)


#: Residual blocks for CSP stages (``block_fn(c, c, norm=..., act=..., **block_kwargs)``).
BLOCKS: Registry[Callable[..., nn.Module]] = Registry("block")
#: Norm layer factories (``norm(channels)``).
NORMS: Registry[Callable[[int], nn.Module]] = Registry("norm")
#: Activation factories (``act()``).
ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation")
#: Neck classes by ``NeckSpec.kind`` (each module registers its own; see :class:`~cspdet.models.spec.NeckSpec`).
NECKS: Registry[Callable[..., nn.Module]] = Registry("neck")
#: Head classes by ``HeadSpec.kind`` (see :class:`~cspdet.models.spec.HeadSpec`).
HEADS: Registry[Callable[..., nn.Module]] = Registry("head")
#: Backbone classes by ``BackboneSpec.kind``; each has ``from_spec(spec)`` and a ``spec`` property.
BACKBONE_KINDS: Registry[Any] = Registry("backbone kind")
#: Stage classes a backbone or neck stacks (``stage_fn(c_in, c_out, num_blocks, ..., norm=..., act=...)``).
STAGES: Registry[Callable[..., nn.Module]] = Registry("stage")

BLOCKS.register("resnet", ResNetBottleneck)
BLOCKS.register("resnext", ResNeXtBottleneck)
BLOCKS.register("darknet", DarknetBottleneck)
NORMS.register("bn", nn.BatchNorm2d)
NORMS.register("yolox_bn", YoloxBatchNorm2d)
ACTIVATIONS.register("silu", nn.SiLU)
ACTIVATIONS.register("relu", nn.ReLU)
ACTIVATIONS.register("leaky_relu", leaky_relu_01)  # configs' spelling (slope 0.1, as YOLOX)
ACTIVATIONS.register("lrelu", leaky_relu_01)
ACTIVATIONS.register("leaky_relu_0.01", nn.LeakyReLU)  # timm's CSPNets
ACTIVATIONS.register("gelu", nn.GELU)
ACTIVATIONS.register("hardswish", nn.Hardswish)
