# Agent-PVT-T UPerNet 160k: not reported (Semantic FPN only); Swin UPerNet recipe (lr 6e-5, wd 0.01, poly, batch 16), dp 0.1.
# the authors' downstream agent grids 12-16-28-28 (agent_shapes; the ImageNet weights load unchanged, biases resampled)
_base_ = ['../_base_/upernet_160k.py']
model = dict(backbone=dict(model_name='zoo_agent_pvt_tiny', out_norm=None, drop_path_rate=0.1,
                           model_kwargs=dict(agent_shapes=((12, 12), (16, 16), (28, 28), (28, 28)))),
             decode_head=dict(in_channels=[64, 128, 320, 512]),
             auxiliary_head=dict(in_channels=320))
