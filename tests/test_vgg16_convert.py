"""Converting Caffe (.caffemodel) and Keras (.h5) VGG16 weights into torchvision's state dict: a
torchvision VGG16 written in each framework's layout (the inverse mappings, written here) comes
back as identical tensors; the layouts' meaning is checked against each framework's own arithmetic
(Keras: channels-last kernels and flatten), and the wire-format reader against the protobuf library."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
import torchvision
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tlbench.errors import WeightsError
from tlbench.models import create_backbone
from tlbench.models.caffemodel import read_binaryproto, read_caffemodel
from tlbench.models.vgg16_convert import (
    CAFFE_CONVS,
    KERAS_CONVS,
    KERAS_FCS,
    TORCHVISION_CONVS,
    TORCHVISION_FCS,
    convert,
    main,
    read_keras_h5,
)

CLASSES = 365  # a Places365 head: the loader resizes torchvision's 1000-class head to the file's


@pytest.fixture(scope="module")
def vgg16() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.vgg16(weights=None)
    model.classifier[6] = torch.nn.Linear(4096, CLASSES)
    return model.eval()


def keras_kernels(state: dict[str, torch.Tensor]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """torchvision -> Keras: conv (out, in, kh, kw) -> (kh, kw, in, out); fc6 (out, C*H*W) -> (H*W*C, out),
    its rows in the channels-last flatten order of pool5; other dense layers transposed."""
    kernels = {}
    for keras_name, module in zip(KERAS_CONVS + KERAS_FCS, TORCHVISION_CONVS + TORCHVISION_FCS):
        weight, bias = state[f"{module}.weight"].numpy(), state[f"{module}.bias"].numpy()
        if weight.ndim == 4:
            kernel = weight.transpose(2, 3, 1, 0)
        elif keras_name == "fc1":
            kernel = weight.reshape(-1, 512, 7, 7).transpose(2, 3, 1, 0).reshape(512 * 7 * 7, -1)
        else:
            kernel = weight.T
        kernels[keras_name] = (np.ascontiguousarray(kernel), bias)
    return kernels


def write_keras2_h5(path, kernels: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """The layout of Keras 2 `model.save_weights(...h5)`, as in the Keras port's release files:
    a group per layer (weightless layers too) holding LAYER/kernel:0 and LAYER/bias:0."""
    names = ["input_1", *KERAS_CONVS[:2], "block1_pool", *KERAS_CONVS[2:], "flatten", *KERAS_FCS]
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [n.encode() for n in names]
        handle.attrs["backend"] = b"tensorflow"
        for name in names:
            group = handle.create_group(name)
            weight_names = [f"{name}/kernel:0", f"{name}/bias:0"] if name in kernels else []
            group.attrs["weight_names"] = [w.encode() for w in weight_names]
            for weight_name, array in zip(weight_names, kernels.get(name, ())):
                group.create_dataset(weight_name, data=array)


def test_keras_h5_round_trip_gives_identical_tensors_and_features(tmp_path, vgg16, capsys):
    state = vgg16.state_dict()
    kernels = keras_kernels(state)
    write_keras2_h5(tmp_path / "vgg16-places365_weights_tf_dim_ordering_tf_kernels.h5", kernels)
    out = tmp_path / "converted.pth"
    assert main([str(tmp_path / "vgg16-places365_weights_tf_dim_ordering_tf_kernels.h5"), str(out)]) == 0
    assert "model.preprocessing=caffe" in capsys.readouterr().out
    converted = torch.load(out, weights_only=True)
    assert converted.keys() == state.keys()
    for key, tensor in state.items():
        assert torch.equal(converted[key], tensor), key

    # Keras' own arithmetic on the written kernels: fc1 reads pool5 flattened channels-last...
    pool5 = torch.randn(2, 512, 7, 7)
    kernel, bias = kernels["fc1"]
    keras_fc1 = pool5.permute(0, 2, 3, 1).reshape(2, -1).numpy() @ kernel + bias
    torch_fc1 = torch.nn.functional.linear(torch.flatten(pool5, 1), converted["classifier.0.weight"])
    np.testing.assert_allclose(
        torch_fc1.numpy() + converted["classifier.0.bias"].numpy(), keras_fc1, rtol=1e-4, atol=1e-4
    )
    # ...and a Conv2D is a cross-correlation with a (kh, kw, in, out) kernel
    patch = np.random.default_rng(0).normal(size=(3, 3, 3)).astype(np.float32)  # (h, w, c), channels-last
    kernel, bias = kernels["block1_conv1"]
    keras_conv = np.einsum("hwc,hwco->o", patch, kernel) + bias
    torch_conv = torch.nn.functional.conv2d(
        torch.from_numpy(patch).permute(2, 0, 1)[None], converted["features.0.weight"], converted["features.0.bias"]
    )
    np.testing.assert_allclose(torch_conv.reshape(-1).numpy(), keras_conv, rtol=1e-4, atol=1e-5)
    del kernels, converted  # 0.5 GB each

    # the file loads through model.weights, 365-class head included, and computes the same network
    backbone = create_backbone("vgg16", "torchvision", weights=str(out), preprocessing="caffe")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(backbone.model(x), vgg16(x))


@pytest.mark.parametrize("layout", ["keras1 save_weights", "keras2 model.save", "keras3 weights.h5"])
def test_other_keras_layouts_are_read_and_optimizer_slots_skipped(tmp_path, layout):
    kernel, bias = np.ones((3, 3, 3, 4), np.float32), np.arange(4, dtype=np.float32)
    with h5py.File(tmp_path / "w.h5", "w") as handle:
        if layout.startswith("keras1"):  # the fchollet/deep-learning-models v0.1 VGG16 files
            handle.create_dataset("block1_conv1/block1_conv1_W_1:0", data=kernel)
            handle.create_dataset("block1_conv1/block1_conv1_b_1:0", data=bias)
        elif layout.startswith("keras2"):
            handle.create_dataset("model_weights/block1_conv1/block1_conv1/kernel:0", data=kernel)
            handle.create_dataset("model_weights/block1_conv1/block1_conv1/bias:0", data=bias)
            handle.create_dataset("optimizer_weights/Adam/block1_conv1/kernel/m:0", data=kernel * 0)
        else:
            handle.create_dataset("layers/block1_conv1/vars/0", data=kernel)
            handle.create_dataset("layers/block1_conv1/vars/1", data=bias)
            handle.create_dataset("optimizer/vars/3", data=kernel * 0)
    layers = read_keras_h5(tmp_path / "w.h5")
    assert list(layers) == ["block1_conv1"]
    np.testing.assert_array_equal(layers["block1_conv1"][0], kernel)
    np.testing.assert_array_equal(layers["block1_conv1"][1], bias)


def test_a_keras_file_without_the_top_layers_is_refused(tmp_path, vgg16, capsys):
    kernels = {k: v for k, v in keras_kernels(vgg16.state_dict()).items() if k in KERAS_CONVS}
    write_keras2_h5(tmp_path / "notop.h5", kernels)
    with pytest.raises(WeightsError, match=r"fc1, fc2, predictions.*notop"):
        convert(tmp_path / "notop.h5", tmp_path / "out.pth")
    assert main([str(tmp_path / "notop.h5"), str(tmp_path / "out.pth")]) == 1
    assert "notop" in capsys.readouterr().err
    assert not (tmp_path / "out.pth").exists()


# --- Caffe: a small protobuf wire-format writer (the reader is checked against the library below) ---


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _message(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _blob(array: np.ndarray) -> bytes:
    shape = _message(1, b"".join(_varint(d) for d in array.shape))  # BlobShape.dim, packed
    return _message(7, shape) + _message(5, array.astype("<f4").tobytes())


def _layer(name: str, kind: str, blobs: list[np.ndarray]) -> bytes:
    return _message(1, name.encode()) + _message(2, kind.encode()) + b"".join(_message(7, _blob(b)) for b in blobs)


def write_caffemodel(path, state: dict[str, torch.Tensor]) -> None:
    """The layers of deploy_vgg16_places365.prototxt with the torchvision tensors as blobs: Caffe's
    conv (out, in, kh, kw) and InnerProduct (out, in) with fc6's input flattened as (C, H, W)."""
    parts = [_message(1, b"VGG-Places365")]
    for name, module in zip((*CAFFE_CONVS, "fc6", "fc7", "fc8a"), TORCHVISION_CONVS + TORCHVISION_FCS):
        blobs = [state[f"{module}.weight"].numpy(), state[f"{module}.bias"].numpy()]
        kind = "Convolution" if name.startswith("conv") else "InnerProduct"
        parts.append(_message(100, _layer(name, kind, blobs)))
        parts.append(_message(100, _layer(f"relu_{name}", "ReLU", [])))  # layers without blobs are skipped
    path.write_bytes(b"".join(parts))


def write_mean_file(path, mean_image: np.ndarray) -> None:
    """A mean .binaryproto as Caffe's compute_image_mean writes it: legacy num/channels/height/width."""
    c, h, w = mean_image.shape
    legacy = b"".join(_varint(field << 3) + _varint(v) for field, v in zip((1, 2, 3, 4), (1, c, h, w)))
    path.write_bytes(legacy + _message(5, mean_image.astype("<f4").tobytes()))


def test_caffemodel_round_trip_gives_identical_tensors_and_the_mean_file_its_caffe_mean(tmp_path, vgg16, capsys):
    state = vgg16.state_dict()
    write_caffemodel(tmp_path / "vgg16_places365.caffemodel", state)
    mean_image = np.stack([np.full((8, 8), v, np.float32) for v in (104.0, 112.5, 116.75)])
    mean_image[:, 0, 0] += 64  # not constant: the per-channel mean is over the whole image
    write_mean_file(tmp_path / "mean.binaryproto", mean_image)
    out = tmp_path / "converted.pth"
    argv = [str(tmp_path / "vgg16_places365.caffemodel"), str(out), "--mean-file", str(tmp_path / "mean.binaryproto")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "model.caffe_mean=[105.0,113.5,117.75]" in printed and "365-class head" in printed
    converted = torch.load(out, weights_only=True)
    assert converted.keys() == state.keys()
    for key, tensor in state.items():
        assert torch.equal(converted[key], tensor), key


def _caffe_classes():
    """BlobProto, LayerParameter, V1LayerParameter and NetParameter with caffe.proto's field numbers,
    built by the protobuf library (no protoc)."""
    file = descriptor_pb2.FileDescriptorProto(name="caffe_subset.proto", package="caffe_subset", syntax="proto2")
    F = descriptor_pb2.FieldDescriptorProto
    packed = descriptor_pb2.FieldOptions(packed=True)

    def message(name: str, *fields: tuple) -> None:
        proto = file.message_type.add(name=name)
        for field_name, number, kind, label, type_name, options in fields:
            field = proto.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = f".caffe_subset.{type_name}"
            if options:
                field.options.CopyFrom(options)

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message("BlobShape", ("dim", 1, F.TYPE_INT64, rep, None, packed))
    message(
        "BlobProto",
        ("num", 1, F.TYPE_INT32, opt, None, None),
        ("channels", 2, F.TYPE_INT32, opt, None, None),
        ("height", 3, F.TYPE_INT32, opt, None, None),
        ("width", 4, F.TYPE_INT32, opt, None, None),
        ("data", 5, F.TYPE_FLOAT, rep, None, packed),
        ("shape", 7, F.TYPE_MESSAGE, opt, "BlobShape", None),
        ("double_data", 8, F.TYPE_DOUBLE, rep, None, packed),
    )
    message(
        "LayerParameter",
        ("name", 1, F.TYPE_STRING, opt, None, None),
        ("type", 2, F.TYPE_STRING, opt, None, None),
        ("blobs", 7, F.TYPE_MESSAGE, rep, "BlobProto", None),
    )
    message(
        "V1LayerParameter",
        ("name", 4, F.TYPE_STRING, opt, None, None),
        ("type", 5, F.TYPE_INT32, opt, None, None),
        ("blobs", 6, F.TYPE_MESSAGE, rep, "BlobProto", None),
    )
    message(
        "NetParameter",
        ("name", 1, F.TYPE_STRING, opt, None, None),
        ("layers", 2, F.TYPE_MESSAGE, rep, "V1LayerParameter", None),
        ("layer", 100, F.TYPE_MESSAGE, rep, "LayerParameter", None),
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe_subset.{n}"))
        for n in ("NetParameter", "BlobProto")
    }


def test_wire_reader_agrees_with_the_protobuf_library_on_both_layer_formats(tmp_path):
    classes = _caffe_classes()
    rng = np.random.default_rng(0)
    weight, bias, legacy, doubles = (
        rng.normal(size=(4, 3, 3, 3)),
        rng.normal(size=4),
        rng.normal(size=(1, 1, 5, 6)),
        rng.normal(size=(2, 3)),
    )
    net = classes["NetParameter"](name="tiny")
    new = net.layer.add(name="conv1_1", type="Convolution")
    for array in (weight, bias):
        blob = new.blobs.add()
        blob.shape.dim.extend(array.shape)
        blob.data.extend(array.ravel().tolist())
    net.layer.add(name="relu1_1", type="ReLU")
    old = net.layers.add(name="fc6", type=14)  # V1 INNER_PRODUCT, legacy 4-D shape
    blob = old.blobs.add(num=1, channels=1, height=5, width=6)
    blob.data.extend(legacy.ravel().tolist())
    blob = old.blobs.add()
    blob.shape.dim.extend(doubles.shape)
    blob.double_data.extend(doubles.ravel().tolist())
    (tmp_path / "tiny.caffemodel").write_bytes(net.SerializeToString())

    layers = read_caffemodel(tmp_path / "tiny.caffemodel")
    assert sorted(layers) == ["conv1_1", "fc6"]
    np.testing.assert_array_equal(layers["conv1_1"][0], weight.astype(np.float32))
    np.testing.assert_array_equal(layers["conv1_1"][1], bias.astype(np.float32))
    np.testing.assert_array_equal(layers["fc6"][0], legacy.astype(np.float32))
    np.testing.assert_array_equal(layers["fc6"][1], doubles.astype(np.float32))

    mean = classes["BlobProto"](num=1, channels=3, height=2, width=2)
    mean.data.extend(np.arange(12, dtype=np.float32).tolist())
    (tmp_path / "mean.binaryproto").write_bytes(mean.SerializeToString())
    np.testing.assert_array_equal(read_binaryproto(tmp_path / "mean.binaryproto"), np.arange(12).reshape(3, 2, 2))


def test_unreadable_inputs_are_weights_errors(tmp_path):
    (tmp_path / "deploy.caffemodel").write_text('name: "VGG-Places365"\ninput: "data"\n')
    with pytest.raises(WeightsError, match="Caffe model"):
        read_caffemodel(tmp_path / "deploy.caffemodel")
    (tmp_path / "w.npz").write_bytes(b"")
    assert main([str(tmp_path / "w.npz"), str(tmp_path / "out.pth")]) == 1
