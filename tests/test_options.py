"""The typed option schemas: every shipped file validates, the JSON schemas are current, problems are named."""
import glob
import json
import os.path as osp
import re

import pytest
from conftest import REPO

import kdsr_pdd.plugin  # noqa: F401  (registers the models and their schemas)
from kdsr_pdd.commands.schema import SHIPPED
from kdsr_pdd.schema import OptionsError, apply_force_yml, options_json_schema, read_option_file, validate_options

OPTION_FILES = sorted(glob.glob(osp.join(REPO, 'options', '**', '*.yml'), recursive=True))


def is_training_file(path):
    recipe = any(f'{osp.sep}{folder}{osp.sep}' in path for folder in ('demo', 'evidence'))
    return f'{osp.sep}train{osp.sep}' in path or (recipe and not osp.basename(path).startswith('test_'))


@pytest.mark.parametrize('path', OPTION_FILES, ids=lambda p: osp.relpath(p, REPO))
def test_shipped_option_files_validate_against_their_schema(path):
    opt = read_option_file(path)
    opt['is_train'] = is_training_file(path)
    options = validate_options(opt, path)
    assert type(options).__name__.endswith('Options') and options.model_type == opt['model_type']
    header = open(path, encoding='utf-8').readline()  # editors find the JSON schema of the model
    assert header == f'# yaml-language-server: $schema={"../" * 2}schemas/{opt["model_type"]}.json\n' or \
        header == f'# yaml-language-server: $schema=../schemas/{opt["model_type"]}.json\n'


@pytest.mark.parametrize('model_type', SHIPPED)
def test_json_schemas_are_generated_from_the_typed_schemas(model_type):
    shipped = osp.join(REPO, 'options', 'schemas', f'{model_type}.json')
    with open(shipped, encoding='utf-8') as f:
        assert json.load(f) == options_json_schema(model_type), 'run: kdsr-pdd schema --out options/schemas'


def test_every_schema_field_has_a_description():
    for model_type in SHIPPED:
        document = options_json_schema(model_type)
        sections = [document] + list(document['$defs'].values())
        for section in sections:
            for name, field in section.get('properties', {}).items():
                assert field.get('description'), f'{model_type}: {section.get("title")}.{name} has no description'


def demo_student():
    opt = read_option_file(osp.join(REPO, 'options', 'demo', 'kdsr_student_x4.yml'))
    opt['is_train'] = True
    return opt


def problems(opt):
    with pytest.raises(OptionsError) as info:
        validate_options(opt, 'x.yml')
    return info.value.problems


def test_unknown_keys_at_any_depth_are_refused_with_the_closest_name():
    opt = demo_student()
    opt['manual_sed'] = 1
    opt['datasets']['train']['use_hfilp'] = True
    opt['val']['metrics']['psnr']['test_y_chanel'] = True
    assert set(problems(opt)) == {
        'manual_sed: unknown option; did you mean manual_seed?',
        'datasets.train.use_hfilp: unknown option; did you mean use_hflip?',
        'val.metrics.psnr.test_y_chanel: unknown argument of calculate_psnr; did you mean test_y_channel?'}


def test_wrong_types_and_arguments_are_named_with_their_path():
    opt = demo_student()
    opt['train']['optim_g']['lr'] = '5e-4'  # YAML reads 5e-4 without a dot as a string
    opt['train']['total_iter'] = 'many'
    opt['network_g']['n_feats'] = -3
    opt['val']['metrics']['ssim']['crop_boarder'] = 4
    found = problems(opt)
    assert "train.optim_g.lr: expected a number, got '5e-4' (YAML reads 5e-4 as text: write 5.0e-4 or !!float 5e-4)" \
        in found
    assert any(p.startswith('train.total_iter: Input should be a valid integer') for p in found)
    assert 'network_g: KDSRStudent cannot be built with these arguments: KDSRStudent: n_feats must be a positive ' \
           'integer, got -3' in found
    assert 'val.metrics.ssim.crop_boarder: unknown argument of calculate_ssim; did you mean crop_border?' in found


def test_missing_paths_are_all_reported_at_once(tmp_path, monkeypatch):
    opt = demo_student()
    monkeypatch.chdir(tmp_path)  # relative paths are read from the working folder: no datasets/demo in this one
    with pytest.raises(OptionsError) as info:
        validate_options(opt, 'x.yml', check_paths=True)
    found = info.value.problems
    assert sum('no such file or folder' in p or 'no such file;' in p for p in found) == 4, found
    assert {p.split(':')[0] for p in found} == {'datasets.train.dataroot_gt', 'datasets.val.dataroot_gt',
                                                 'datasets.val.dataroot_lq', 'path.pretrain_network_teacher'}


def test_force_yml_follows_basicsr_and_unknown_keys_are_refused():
    opt = apply_force_yml(demo_student(), ['train:total_iter=5', 'val:val_freq=5'])
    assert validate_options(opt, 'x.yml').train.total_iter == 5
    opt = apply_force_yml(demo_student(), ['train:total_iters=5'])  # BasicSR creates the new last key ...
    assert problems(opt) == ['train.total_iters: unknown option; did you mean total_iter?']  # ... the schema refuses
    with pytest.raises(OptionsError, match=re.escape('--force_yml trian:total_iter=5: no option trian; did you mean '
                                                     'train?')):
        apply_force_yml(demo_student(), ['trian:total_iter=5'])


def test_never_silently_random_weights():
    opt = read_option_file(osp.join(REPO, 'options', 'demo', 'test_kdsr_student_x4.yml'))
    opt['is_train'] = False
    opt['path']['pretrain_network_g'] = None
    assert problems(opt) == ['path.pretrain_network_g: a test needs the checkpoint to evaluate (it is empty, so the '
                             'network would keep its random initial weights)']
    opt = read_option_file(osp.join(REPO, 'options', 'demo', 'pdd_ema_x4.yml'))
    opt['is_train'] = True
    opt['path']['pretrain_network_g'] = None
    assert problems(opt) == ['path.pretrain_network_g: PDDModel adapts a pretrained network; set the checkpoint it '
                             'starts from']


def test_loggers_that_are_not_installed_are_named(monkeypatch):
    import importlib.util
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'wandb' else find_spec(name, *a))
    opt = demo_student()
    opt['logger'].update(use_tb_logger=True, wandb={'project': 'kdsr', 'resume_id': None})
    assert problems(opt) == ['logger: wandb is not installed: pip install wandb, or turn it off in logger']
    opt['logger']['use_tb_logger'] = False
    assert problems(opt) == ['logger: wandb.project needs use_tb_logger: true (BasicSR logs to wandb through '
                             'tensorboard)']
