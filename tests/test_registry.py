"""`import zoo` registers zoo_* models in timm and never overrides a timm name."""
import importlib
import subprocess
import sys

import timm

import zoo


def test_every_zoo_model_is_named_zoo_family_variant():
    names = zoo.list_models()
    assert names, 'no models registered'
    for name in names:
        assert name.startswith('zoo_') and name.count('_') >= 2, name
        assert timm.models.model_entrypoint(name).__module__.startswith('zoo.models.'), name


def test_list_models_pattern():
    assert zoo.list_models('zoo_swin_*') == sorted(n for n in zoo.list_models() if n.startswith('zoo_swin_'))
    assert 'zoo_swin_tiny' in zoo.list_models('*tiny*')


def test_no_timm_name_is_overridden():
    # the names timm registers without zoo, from a fresh interpreter
    code = 'import timm, json; print(json.dumps(sorted(timm.list_models())))'
    plain = set(eval(subprocess.check_output([sys.executable, '-c', code], text=True)))
    for name in plain:
        assert not name.startswith('zoo_')
        assert not timm.models.model_entrypoint(name).__module__.startswith('zoo'), name
    assert set(timm.list_models()) == plain | set(zoo.list_models())


def test_import_zoo_does_not_import_openmmlab():
    code = 'import sys, zoo; print(any(m.split(".")[0] in ("mmcv", "mmdet", "mmseg", "mmengine") for m in sys.modules))'
    assert subprocess.check_output([sys.executable, '-c', code], text=True).strip() == 'False'
