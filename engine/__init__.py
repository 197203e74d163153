"""The training engine: a Trainer over one explicit, serialisable TrainState, built from small parts.

    state.py        TrainState (epoch, batch, step, best metric) and the RNG snapshot
    seed.py         seed_everything(): Python, NumPy and torch seeds, cuDNN's determinism
    optim.py        parameter groups (weight-decay rules) and the optimizer
    checkpoint.py   CheckpointManager: save, rotate recovery files, resume, compatibility checks
    evaluator.py    evaluate(): loss, top-1/top-5 (and a confusion matrix) over a sharded split
    loggers.py      TensorBoard, metrics.csv and the console line of every epoch
    trainer.py      Trainer.fit() / train_one_epoch(), its TrainerSettings, and the Task (ClassificationTask)
    detection.py    DetectionTask: the detector's loss terms, COCO box AP (coco_eval.py)

The engine imports utils/ and nothing from agents/, commands/, datasets/ or graphs/: the agent hands it
a model, loaders, the settings and a task (the loss, the mixup and the regulariser as callables).
"""
