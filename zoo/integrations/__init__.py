"""Dense-prediction integrations. Nothing here is imported by `import zoo`.

- `zoo.integrations.backbone.ZooBackbone`: any zoo (or timm) model as a multi-scale NCHW backbone, plain torch.
- `zoo.integrations.mm`: registers ZooBackbone in mmdet's and mmseg's MODELS and the optimizer constructor
  `ZooOptimWrapperConstructor` in mmengine; configs load it with
  `custom_imports = dict(imports=['zoo.integrations.mm'], allow_failed_imports=False)`.
- `zoo.integrations.mm_config`: config helpers without OpenMMLab imports (CPU / toy-data overrides,
  neck/head channel sync) used by tools/train_det.py, tools/train_seg.py and the tests.
"""
