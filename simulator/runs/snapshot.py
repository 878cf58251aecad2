"""A data-only encoding of the model's state: JSON for the structure, named numpy arrays for the bulk.

Checkpoints are files people share and download, so reading one must never run code. Pickle
cannot promise that (its loader calls whatever the file names), so this module encodes a tree
of plain values itself: `Encoder().encode(value, where)` returns JSON-able data and collects the arrays it refers
to by name in `arrays` (saved in an `.npz`, read back with `allow_pickle=False`);
`Decoder(arrays).decode(data)` rebuilds the tree.
Decoding only ever constructs the types listed here: plain containers, numpy arrays and
scalars of plain dtypes, numpy bit generators by name, and the simulator's state classes in
`STATE_CLASSES`, whose instances are filled attribute by attribute without calling any of
their methods. Anything else is refused when saving (`SnapshotError`), so every checkpoint
written can be read. Round trips are exact: floats go through their shortest repr (or a
float64 array), integers are unbounded in JSON, shared and cyclic references are kept.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from typing import Any

import numpy as np

from simulator.market.ledger import Ledger
from simulator.market.state import (
    Advertisers,
    ConsumptionWindow,
    Creators,
    Goods,
    HomogenizationSample,
    MarketState,
    UidIndex,
    Users,
)
from simulator.metrics.panels import PanelRecorder
from simulator.rules.allocation.candidates import CandidateIndex

# The classes a snapshot may hold, by name: plain holders of state (no behaviour runs on load).
STATE_CLASSES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        MarketState, Users, Creators, Goods, Advertisers, UidIndex, HomogenizationSample, ConsumptionWindow,
        Ledger, PanelRecorder, CandidateIndex,
    )
}
BIT_GENERATORS: dict[str, type] = {cls.__name__: cls for cls in (np.random.PCG64, np.random.PCG64DXSM, np.random.Philox, np.random.SFC64, np.random.MT19937)}
DEFAULT_FACTORIES: dict[str, type] = {cls.__name__: cls for cls in (int, float, list, dict, set)}
_ARRAY_KINDS = frozenset("biufcUSmM")  # dtypes np.save writes without pickle
_SCALAR_KINDS = frozenset("biuf")
TAG = "$"


class SnapshotError(ValueError):
    """A value that cannot be encoded, or encoded data that is damaged or names what it may not."""


class Encoder:
    """One encoding pass: values share one table of arrays (`arrays`) and one reference memo."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.memo: dict[int, int] = {}  # id(object) -> reference number
        self.keep: list[Any] = []  # keeps memoised objects alive so their ids stay unique

    def array(self, values: np.ndarray) -> str:
        name = f"a{len(self.arrays)}"
        self.arrays[name] = values
        return name

    def encode(self, value: Any, where: str) -> Any:
        kind = type(value)
        if value is None or kind is bool or kind is str:
            return value
        if kind is int:
            return value
        if kind is float:
            return value if math.isfinite(value) else {TAG: "float", "value": repr(value)}
        if isinstance(value, np.generic) and not isinstance(value, np.ndarray):
            if value.dtype.kind not in _SCALAR_KINDS:
                raise SnapshotError(f"{where}: a numpy {value.dtype} scalar cannot be saved")
            return {TAG: "scalar", "dtype": value.dtype.str, "value": self.encode(value.item(), where)}
        reference = self.memo.get(id(value))
        if reference is not None:
            return {TAG: "ref", "id": reference}
        if kind in (list, dict, set, frozenset, deque, defaultdict, np.ndarray) or kind.__name__ in STATE_CLASSES or isinstance(value, np.random.Generator):
            self.memo[id(value)] = number = len(self.memo)
            self.keep.append(value)
        else:
            number = None
        if kind is np.ndarray:
            return {TAG: "array", "id": number, "name": self.array(self._plain_array(value, where))} | (
                {"object": "str"} if value.dtype == object else {}
            )
        if kind is tuple:
            return {TAG: "tuple", "items": [self.encode(item, f"{where}[{i}]") for i, item in enumerate(value)]}
        if kind is list:
            packed = self._packed(value)
            if packed is not None:
                return {TAG: packed[0], "id": number, "name": self.array(packed[1])}
            return {TAG: "list", "id": number, "items": [self.encode(item, f"{where}[{i}]") for i, item in enumerate(value)]}
        if kind in (set, frozenset):
            # sorted when the items allow it, so one state always gives the same bytes
            items = sorted(value) if all(type(item) is int for item in value) or all(type(item) is str for item in value) else list(value)
            return {TAG: kind.__name__, "id": number, "items": [self.encode(item, f"{where}{{}}") for item in items]}
        if kind is deque:
            items = [self.encode(item, f"{where}[{i}]") for i, item in enumerate(value)]
            return {TAG: "deque", "id": number, "maxlen": value.maxlen, "items": items}
        if kind in (dict, defaultdict):
            encoded: dict[str, Any] = {TAG: "dict", "id": number, "items": self._items(value, where)}
            if kind is defaultdict:
                factory = value.default_factory
                if factory not in DEFAULT_FACTORIES.values():
                    raise SnapshotError(f"{where}: a defaultdict of {factory!r} cannot be saved")
                encoded.update({TAG: "defaultdict", "factory": factory.__name__})  # type: ignore[union-attr]
            return encoded
        if isinstance(value, np.random.Generator):
            return {TAG: "generator", "id": number, "state": self.bit_generator(value.bit_generator, where)}
        if kind.__name__ in STATE_CLASSES and STATE_CLASSES[kind.__name__] is kind:
            fields = vars(value)
            return {TAG: "object", "id": number, "class": kind.__name__, "fields": self.attributes(fields, where)}
        raise SnapshotError(
            f"{where} is a {kind.__module__}.{kind.__qualname__}, which a checkpoint may not hold "
            "(allowed: the simulator's state classes, numpy arrays, scalars and generators, plain containers)"
        )

    def attributes(self, fields: dict[str, Any], where: str) -> dict[str, Any]:
        return {name: self.encode(item, f"{where}.{name}") for name, item in fields.items()}

    def _items(self, mapping: dict[Any, Any], where: str) -> list[list[Any]]:
        return [[self.encode(key, f"{where} key"), self.encode(item, f"{where}[{key!r}]")] for key, item in mapping.items()]

    def bit_generator(self, bit_generator: Any, where: str) -> dict[str, Any]:
        name = type(bit_generator).__name__
        if BIT_GENERATORS.get(name) is not type(bit_generator):
            raise SnapshotError(f"{where}: a {name} bit generator cannot be saved")
        return {"bit_generator": name, "state": self.encode(bit_generator.state, f"{where}.state")}

    @staticmethod
    def _plain_array(values: np.ndarray, where: str) -> np.ndarray:
        if values.dtype == object:
            if not all(type(item) is str for item in values.flat):
                raise SnapshotError(f"{where}: an object array that does not hold only strings cannot be saved")
            return values.astype(str) if values.size else np.zeros(values.shape, dtype="U1")
        if values.dtype.kind not in _ARRAY_KINDS or values.dtype.fields is not None:
            raise SnapshotError(f"{where}: an array of dtype {values.dtype} cannot be saved")
        return values

    @staticmethod
    def _packed(values: list[Any]) -> tuple[str, np.ndarray] | None:
        """A long list of plain floats or int64-sized ints as one array (metric rows, mostly)."""
        if len(values) < 8:
            return None
        first = type(values[0])
        if first is float and all(type(item) is float for item in values):
            return "floats", np.array(values, dtype=np.float64)
        if first is int and all(type(item) is int for item in values):
            if all(-(2**63) <= item < 2**63 for item in values):
                return "ints", np.array(values, dtype=np.int64)
        return None


class Decoder:
    """Rebuilds what an `Encoder` wrote; raises SnapshotError for anything malformed."""

    def __init__(self, arrays: Any):
        self.arrays = arrays  # a mapping of name -> array (an NpzFile with allow_pickle=False)
        self.memo: dict[int, Any] = {}

    def _remember(self, data: dict[str, Any], value: Any) -> Any:
        number = data.get("id")
        if number is not None:
            if type(number) is not int or number in self.memo:
                raise SnapshotError(f"bad reference number {number!r}")
            self.memo[number] = value
        return value

    def _array(self, name: Any) -> np.ndarray:
        if type(name) is not str:
            raise SnapshotError(f"bad array name {name!r}")
        try:
            values = self.arrays[name]
        except KeyError:
            raise SnapshotError(f"array {name!r} is missing") from None
        if not isinstance(values, np.ndarray) or values.dtype.kind not in _ARRAY_KINDS:
            raise SnapshotError(f"array {name!r} has a dtype a checkpoint may not hold")
        return values

    def decode(self, data: Any) -> Any:
        if data is None or type(data) in (bool, int, float, str):
            return data
        if type(data) is list:
            raise SnapshotError("a bare list (lists are always tagged)")
        if type(data) is not dict or type(data.get(TAG)) is not str:
            raise SnapshotError(f"not an encoded value: {type(data).__name__}")
        tag = data[TAG]
        method = getattr(self, f"_decode_{tag}", None)
        if method is None:
            raise SnapshotError(f"unknown tag {tag!r}")
        return method(data)

    def _items(self, data: dict[str, Any], key: str = "items") -> list[Any]:
        items = data.get(key)
        if type(items) is not list:
            raise SnapshotError(f"{data[TAG]} without a list of {key}")
        return items

    def _decode_float(self, data: dict[str, Any]) -> float:
        if data.get("value") not in ("nan", "inf", "-inf"):
            raise SnapshotError(f"bad float {data.get('value')!r}")
        return float(data["value"])

    def _decode_scalar(self, data: dict[str, Any]) -> Any:
        try:
            dtype = np.dtype(str(data.get("dtype")))
        except TypeError:
            raise SnapshotError(f"bad scalar dtype {data.get('dtype')!r}") from None
        if dtype.kind not in _SCALAR_KINDS:
            raise SnapshotError(f"a scalar of dtype {dtype} may not be loaded")
        value = self.decode(data.get("value"))
        if type(value) not in (bool, int, float):
            raise SnapshotError("a scalar that is not a number")
        try:
            return dtype.type(value)
        except (OverflowError, ValueError):
            raise SnapshotError(f"{value!r} does not fit a {dtype} scalar") from None

    def _decode_ref(self, data: dict[str, Any]) -> Any:
        number = data.get("id")
        if type(number) is not int or number not in self.memo:
            raise SnapshotError(f"a reference to unknown object {number!r}")
        return self.memo[number]

    def _decode_array(self, data: dict[str, Any]) -> np.ndarray:
        values = self._array(data.get("name"))
        if data.get("object") == "str":
            values = values.astype(object)
        elif "object" in data:
            raise SnapshotError("bad array kind")
        return self._remember(data, values)

    def _decode_floats(self, data: dict[str, Any]) -> list[float]:
        values = self._array(data.get("name"))
        if values.dtype != np.float64 or values.ndim != 1:
            raise SnapshotError("a packed float list that is not a float64 vector")
        return self._remember(data, values.tolist())

    def _decode_ints(self, data: dict[str, Any]) -> list[int]:
        values = self._array(data.get("name"))
        if values.dtype != np.int64 or values.ndim != 1:
            raise SnapshotError("a packed int list that is not an int64 vector")
        return self._remember(data, values.tolist())

    def _decode_tuple(self, data: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(self.decode(item) for item in self._items(data))

    def _decode_list(self, data: dict[str, Any]) -> list[Any]:
        result: list[Any] = self._remember(data, [])
        result.extend(self.decode(item) for item in self._items(data))
        return result

    def _decode_set(self, data: dict[str, Any]) -> set[Any]:
        result: set[Any] = self._remember(data, set())
        for item in self._items(data):
            result.add(self._hashable(self.decode(item)))
        return result

    def _decode_frozenset(self, data: dict[str, Any]) -> frozenset[Any]:
        return self._remember(data, frozenset(self._hashable(self.decode(item)) for item in self._items(data)))

    def _decode_deque(self, data: dict[str, Any]) -> deque[Any]:
        maxlen = data.get("maxlen")
        if maxlen is not None and (type(maxlen) is not int or maxlen < 0):
            raise SnapshotError(f"bad deque length {maxlen!r}")
        result: deque[Any] = self._remember(data, deque(maxlen=maxlen))
        result.extend(self.decode(item) for item in self._items(data))
        return result

    def _fill(self, result: dict[Any, Any], data: dict[str, Any]) -> dict[Any, Any]:
        for pair in self._items(data):
            if type(pair) is not list or len(pair) != 2:
                raise SnapshotError("a dict entry that is not a [key, value] pair")
            result[self._hashable(self.decode(pair[0]))] = self.decode(pair[1])
        return result

    def _decode_dict(self, data: dict[str, Any]) -> dict[Any, Any]:
        return self._fill(self._remember(data, {}), data)

    def _decode_defaultdict(self, data: dict[str, Any]) -> defaultdict[Any, Any]:
        factory = DEFAULT_FACTORIES.get(data.get("factory"))  # type: ignore[arg-type]
        if factory is None:
            raise SnapshotError(f"a defaultdict of {data.get('factory')!r} may not be loaded")
        return self._fill(self._remember(data, defaultdict(factory)), data)  # type: ignore[return-value]

    def bit_generator(self, data: Any) -> Any:
        if type(data) is not dict:
            raise SnapshotError("a bit generator that is not a mapping")
        cls = BIT_GENERATORS.get(data.get("bit_generator"))  # type: ignore[arg-type]
        if cls is None:
            raise SnapshotError(f"bit generator {data.get('bit_generator')!r} may not be loaded")
        bit_generator = cls()
        try:
            bit_generator.state = self.decode(data.get("state"))
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise SnapshotError(f"bad {cls.__name__} state: {exc}") from None
        return bit_generator

    def _decode_generator(self, data: dict[str, Any]) -> np.random.Generator:
        return self._remember(data, np.random.Generator(self.bit_generator(data.get("state"))))

    def _decode_object(self, data: dict[str, Any]) -> Any:
        cls = STATE_CLASSES.get(data.get("class"))  # type: ignore[arg-type]
        if cls is None:
            raise SnapshotError(f"class {data.get('class')!r} may not be loaded")
        fields = data.get("fields")
        if type(fields) is not dict:
            raise SnapshotError(f"a {cls.__name__} without fields")
        instance = self._remember(data, object.__new__(cls))
        instance.__dict__.update(self.attributes(fields))
        return instance

    def attributes(self, fields: Any) -> dict[str, Any]:
        if type(fields) is not dict:
            raise SnapshotError("attributes that are not a mapping")
        for name in fields:
            if not name.isidentifier() or name.startswith("__"):
                raise SnapshotError(f"bad attribute name {name[:40]!r}")
        return {name: self.decode(item) for name, item in fields.items()}

    @staticmethod
    def _hashable(key: Any) -> Any:
        try:
            hash(key)
        except TypeError:
            raise SnapshotError(f"an unhashable {type(key).__name__} used as a key") from None
        return key
