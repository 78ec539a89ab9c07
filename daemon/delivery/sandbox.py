"""The Jinja environment of the renderer: the sandbox, made cheaper where it costs and
nothing changes (rendering is most of outboxd's own CPU per message)."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

import jinja2
import jinja2.nodes
import jinja2.runtime
import jinja2.sandbox

#: Names that ``obj.name`` finds on a plain dict as attributes (its methods).
_DICT_ATTRIBUTES = frozenset(dir(dict))

#: Largest integer a template may make with ``**`` (in bits), and the longest string or
#: list with ``*``: far beyond any message, short of a second of CPU.
_MAX_BITS = 100_000
_MAX_REPEATED = 10_000_000


def _ints(left: Any, right: Any) -> bool:
    return isinstance(left, int) and isinstance(right, int)


def _sequence_times(left: Any, right: Any) -> bool:
    return isinstance(left, int) and isinstance(right, str | list | tuple)


class Environment(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """The sandbox, made cheaper where it costs and nothing changes.

    - Each template's globals are one flat dict. Jinja keeps them as a ChainMap over the
      environment's globals and copies that into a new dict on every render, a third of
      rendering a small part (measured: 124 -> 85 us for the subject, text and html of
      ``welcome``). Our globals never change after start-up.
    - ``brand.name`` on a dict: Jinja tries the attribute first and takes the key after the
      AttributeError. For a name that is not a dict attribute the answer is always the
      key, so it is looked up directly (10 exceptions fewer per ``welcome``).
    - A template found once is found again from a plain dict: ``{% extends %}`` and
      ``{% include %}`` look their template up on every render, through a locked LRU
      cache keyed by a new weak reference each time (``auto_reload`` is off, so the LRU
      would return the same template anyway).
    - Contexts (one per part and per include) copy the set of global names once per
      template instead of on every render (:class:`_Context`).
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.context_class = _Context
        self.template_class = _Template
        self._found: dict[str, jinja2.Template] = {}

    def _load_template(
        self, name: str, globals: MutableMapping[str, Any] | None
    ) -> jinja2.Template:
        if globals:  # Jinja adds them to the template: not ours to cache
            return super()._load_template(name, globals)
        found = self._found.get(name)
        if found is None:
            found = self._found[name] = super()._load_template(name, globals)
        return found

    # Operators whose one step can run long in C, out of reach of the render budget
    # (which stops Python code only between bytecodes): ``'x' * 10**10``, ``9**9**9``.
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if _ints(left, right) and abs(left) > 1 and right * left.bit_length() > _MAX_BITS:
                raise jinja2.exceptions.SecurityError("the power is too large")
            return left**right
        if isinstance(right, int) and isinstance(left, str | list | tuple):
            left, right = right, left
        if _sequence_times(left, right) and left * len(right) > _MAX_REPEATED:
            raise jinja2.exceptions.SecurityError("the repeated sequence is too long")
        return left * right

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        return {**self.globals, **(d or {})}

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


#: The global names of each template's (flat, never changed) globals dict, by its id; the
#: dict is kept beside them, so that its id is never reused for another one.
_GLOBAL_NAMES: dict[int, tuple[MutableMapping[str, Any], frozenset[str]]] = {}


class _Context(jinja2.runtime.Context):
    """Jinja's context, whose ``globals_keys`` (read only by Jinja) is shared per globals
    dict instead of copied into a new set for every part and include rendered."""

    def __init__(
        self,
        environment: jinja2.Environment,
        parent: dict[str, Any],
        name: str | None,
        blocks: dict[str, Any],
        globals: MutableMapping[str, Any] | None = None,
    ) -> None:
        self.parent = parent
        self.vars = {}
        self.environment = environment
        self.eval_ctx = jinja2.nodes.EvalContext(environment, name)
        self.exported_vars = set()
        self.name = name
        self.blocks = {k: [v] for k, v in blocks.items()}
        if globals is None:
            self.globals_keys = set()
            return
        known = _GLOBAL_NAMES.get(id(globals))
        if known is None or known[0] is not globals:
            known = _GLOBAL_NAMES[id(globals)] = (globals, frozenset(globals))
        self.globals_keys = known[1]  # type: ignore[assignment]


class _Template(jinja2.Template):
    """A template whose plain new context (a part, not an include) is built directly."""

    def new_context(
        self,
        vars: dict[str, Any] | None = None,
        shared: bool = False,
        locals: Mapping[str, Any] | None = None,
    ) -> jinja2.runtime.Context:
        if shared or locals or vars is None:
            return super().new_context(vars, shared, locals)
        # What jinja2.runtime.new_context does here: the globals under the variables.
        return _Context(self.environment, {**self.globals, **vars}, self.name, self.blocks,
                        self.globals)  # fmt: skip
