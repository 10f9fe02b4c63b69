_base_ = ['./models/upernet.py', './datasets/ade20k_512.py', './schedules/adamw_160k.py', './default_runtime.py']
