"""Training: configs (``config``), the one checkpointed loop every trainer runs (``loop``) and the
torchrun processes it runs on (``ranks``); the classifier's trainer (``trainer``) with distillation
(``teacher``, ``teacher_cache``), losses and stage freezing (``losses``, ``freeze``); hard-set mining
and fine-tuning (``hardset``), runs made of other runs (``fuse``: specialists fused, models by frame
count), and backbone pretraining (``pretrain``: supervised; ``simclr`` and ``avc``, audio-visual
correspondence: self-supervised). The run directory they write is ``shortvid.run``."""
