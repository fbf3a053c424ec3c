"""Reading the checkpoint formats users already have (kdsr_pdd.checkpoints)."""
import pytest
import torch
from basicsr.archs.rrdbnet_arch import RRDBNet

from kdsr_pdd.checkpoints import CheckpointError, load_weights, read_state_dict


def _tiny_rrdb(seed):
    torch.manual_seed(seed)
    return RRDBNet(3, 3, scale=4, num_feat=8, num_block=2, num_grow_ch=4)


def test_realesrgan_container_prefers_params_ema(tmp_path):
    ema, plain = _tiny_rrdb(0), _tiny_rrdb(1)
    torch.save({'params_ema': ema.state_dict(), 'params': plain.state_dict()}, tmp_path / 'x4plus.pth')
    net = _tiny_rrdb(2)
    assert load_weights(net, str(tmp_path / 'x4plus.pth')) == 'params_ema'
    assert torch.equal(net.conv_first.weight, ema.conv_first.weight)
    assert load_weights(net, str(tmp_path / 'x4plus.pth'), param_key='params') == 'params'
    assert torch.equal(net.conv_first.weight, plain.conv_first.weight)

    torch.save({'params': plain.state_dict()}, tmp_path / 'net.pth')
    assert load_weights(net, str(tmp_path / 'net.pth'), param_key='params_ema') == 'params'


def test_bsrgan_raw_state_dict_with_esrgan_names_and_module_prefix(tmp_path):
    source = _tiny_rrdb(3)
    # ESRGAN / BSRGAN names, written out by hand for this 2-block net
    renames = {'conv_body': 'trunk_conv', 'conv_up1': 'upconv1', 'conv_up2': 'upconv2', 'conv_hr': 'HRconv'}
    old = {}
    for key, value in source.state_dict().items():
        parts = key.split('.')
        if parts[0] == 'body':  # body.<i>.rdb<j>.conv<k>.<w|b>
            key = f'RRDB_trunk.{parts[1]}.RDB{parts[2][-1]}.' + '.'.join(parts[3:])
        elif parts[0] in renames:
            key = '.'.join([renames[parts[0]]] + parts[1:])
        old['module.' + key] = value
    assert 'module.RRDB_trunk.1.RDB3.conv5.weight' in old and 'module.HRconv.bias' in old
    torch.save(old, tmp_path / 'BSRGAN.pth')
    net = _tiny_rrdb(4)
    assert load_weights(net, str(tmp_path / 'BSRGAN.pth')) is None
    for key, value in source.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key


def test_mismatch_names_missing_and_unexpected_keys(tmp_path):
    state = _tiny_rrdb(0).state_dict()
    state['extra.weight'] = torch.zeros(1)
    del state['conv_last.bias']
    torch.save({'params': state}, tmp_path / 'bad.pth')
    with pytest.raises(CheckpointError, match=r'missing conv_last.bias; unexpected extra.weight'):
        load_weights(_tiny_rrdb(1), str(tmp_path / 'bad.pth'))

    wide = RRDBNet(3, 3, scale=4, num_feat=16, num_block=2, num_grow_ch=4)
    torch.save(wide.state_dict(), tmp_path / 'wide.pth')
    with pytest.raises(CheckpointError, match='shape mismatch'):
        load_weights(_tiny_rrdb(1), str(tmp_path / 'wide.pth'))
    with pytest.raises(FileNotFoundError, match='nothing.pth'):
        read_state_dict(str(tmp_path / 'nothing.pth'))


def test_non_strict_loading_skips_entries_of_another_shape(tmp_path):
    wide = RRDBNet(3, 3, scale=4, num_feat=16, num_block=2, num_grow_ch=4)
    state = _tiny_rrdb(5).state_dict()
    state['conv_first.weight'] = wide.state_dict()['conv_first.weight']  # (16,3,3,3) instead of (8,3,3,3)
    torch.save(state, tmp_path / 'mixed.pth')
    net = _tiny_rrdb(6)
    before = net.conv_first.weight.clone()
    load_weights(net, str(tmp_path / 'mixed.pth'), strict=False)
    assert torch.equal(net.conv_first.weight, before)
    assert torch.equal(net.conv_last.weight, state['conv_last.weight'])
