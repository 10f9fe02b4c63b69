_base_ = ['./models/sem_fpn.py', './datasets/ade20k_512.py', './schedules/adamw_poly_40k.py', './default_runtime.py']
