"""The embedded default: AXM-Net on SynthPedes, sized for a 2-core CPU.

`configs/synthetic.py:smoke` is a seconds-long variant (tiny data and model) used by the tests.
"""
import ml_collections


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  """Returns the full config tree; every other config starts from this one."""
  if variant not in ('', 'smoke'):
    raise ValueError(f'unknown variant {variant!r} of configs/synthetic.py; expected "" or "smoke".')
  config = ml_collections.ConfigDict()

  config.data = ml_collections.ConfigDict()
  config.data.name = 'synth_pedes'  # synth_pedes | cuhk_pedes | icfg_pedes | rstpreid
  config.data.builder_config = 'default'  # SynthPedes size: 'default', 'tiny' or 'large' (a pretraining corpus)
  config.data.data_dir = ''  # TFDS data dir; '' = TFDS default (~/tensorflow_datasets)
  config.data.manual_dir = ''  # real datasets: the directory the user downloaded
  config.data.image_size = (64, 32)  # (height, width); SynthPedes renders 256x128
  config.data.text_length = 48  # tokens per caption, padded / truncated (SynthPedes: mean 22, max 44)
  config.data.vocab_size = 512  # sentencepiece vocabulary (a ceiling for tiny corpora)
  config.data.identities_per_batch = 32  # P
  config.data.images_per_identity = 2  # K; global batch = P * K
  config.data.flip = True
  config.data.crop_padding = 3  # pad then random crop back to image_size
  config.data.erasing_probability = 0.5
  config.data.eval_batch_size = 128  # global, padded at the end

  config.model = ml_collections.ConfigDict()
  config.model.architecture = 'axm_net'  # axm_net | dual_encoder (the plain reference, axm_jax/models/dual_encoder.py)
  config.model.width = 0.25  # channel multiplier; 1.0 = paper scale (64-256-384-512)
  config.model.streams = 4  # R, receptive fields 3/5/7/9
  config.model.stripes = 4  # K horizontal parts; must divide the final map height
  config.model.embed_dim = 128  # 512 at paper scale
  config.model.word_dim = 300
  config.model.share_gate = True
  config.model.part_attention = True
  config.model.text_attention = True
  # A rung of the ladder to the dual encoder: 'visual' or 'text' encodes that modality with the dual encoder's plain
  # encoder (axm_jax/models/plain_encoders.py); 'visual' needs part_attention=False, 'text' text_attention=False.
  config.model.plain_branch = ''
  config.model.gate_reduction = 16
  config.model.part_reduction = 16
  config.model.text_attention_ratio = 4
  config.model.zero_gamma = True  # each AXM-block path's last BN scale starts at 0: blocks start as their shortcut
  config.model.text_attention_zero_init = False  # start the text attention as the identity (GCNet's last_zero_init)
  config.model.dtype = 'float32'  # compute dtype: float32 | bfloat16 (params stay float32)
  config.model.pretrained_visual = ''  # .npz from `python -m axm_jax.models.pretrained osnet`
  config.model.pretrained_words = ''  # word2vec text file
  # 'WORKDIR[:STEP]': a fresh run starts from that run's checkpoint (best, else latest) where shapes fit, loaded after
  # the pretrained files (axm_jax/warm_start.py); a resumed run restores its own checkpoint instead.
  config.model.init_from = ''
  config.model.dual_encoder_channels = (32, 64, 128, 256)  # dual_encoder: one stride-2 conv-BN-ReLU per entry
  config.model.dual_encoder_text_channels = 256  # dual_encoder: width of the residual 1-D conv text encoder

  config.loss = ml_collections.ConfigDict()
  config.loss.id_weight = 1.0
  config.loss.triplet_weight = 1.0
  config.loss.triplet_warmup_steps = 300  # the triplet weight ramps from 0 (see axm_jax/losses.py)
  config.loss.affinity_weight = 1.0
  config.loss.margin = 0.3
  config.loss.label_smoothing = 0.1
  config.loss.affinity_form = 'bce'  # bce | paper
  config.loss.affinity_scale_init = 10.0
  config.loss.affinity_bias_init = -5.0
  # SPEC §2.1, beyond the paper: similarity distribution matching and identity-aware InfoNCE (0 = off).
  config.loss.sdm_weight = 0.0
  config.loss.itc_weight = 0.0
  config.loss.contrastive_temperature = 0.02  # tau of SDM and ITC (IRRA's); the initial value when learned
  config.loss.learn_temperature = False
  # Model fields that follow other sections: the embedding table is as large as the vocabulary ceiling, and the
  # learned scalars of the losses (affinity scale and bias, contrastive temperature) are model parameters
  # initialised from config.loss.
  config.model.vocab_size = config.data.get_ref('vocab_size')
  config.model.affinity_scale_init = config.loss.get_ref('affinity_scale_init')
  config.model.affinity_bias_init = config.loss.get_ref('affinity_bias_init')
  config.model.contrastive_temperature = config.loss.get_ref('contrastive_temperature')
  config.model.learn_temperature = config.loss.get_ref('learn_temperature')

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 3e-3
  config.optim.warmup_steps = 20
  config.optim.weight_decay = 5e-4
  config.optim.clip_norm = 0.0  # 0 = no clipping

  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 1800
  config.train.time_budget_minutes = 0.0  # > 0: as many steps as fit in this budget (axm_jax/time_budget.py)
  config.train.seed = 0
  config.train.log_every = 50
  config.train.checkpoint_every = 600
  config.train.eval_every = 600
  config.train.keep_checkpoints = 2

  config.eval = ml_collections.ConfigDict()
  config.eval.ranks = (1, 5, 10)
  config.eval.reid = True  # cross-modal re-id protocols (needs camera ids)
  config.eval.num_picture_queries = 4
  config.eval.query_chunk = 1024
  config.eval.checkpoint = 'best'  # --mode=eval: 'best' (else latest) | 'latest' | a step number
  config.eval.splits = ('test',)  # --mode=eval: the splits to evaluate
  # --mode=eval on another dataset's splits with the run's model and tokenizer ('' = the run's own): cuhk_pedes,
  # icfg_pedes, rstpreid, synth_pedes or synth_pedes/BUILDER_CONFIG; reports in eval/<dataset>_<split>_<step>.*
  config.eval.dataset = ''
  config.eval.max_unknown_token_fraction = 0.05  # eval.dataset is refused above this share of unknown caption tokens
  if variant == 'smoke':
    _shrink_to_smoke(config)
  return config


def _shrink_to_smoke(config: ml_collections.ConfigDict) -> None:
  """Tiny data and model: compiles and runs in seconds on a CPU."""
  config.data.builder_config = 'tiny'
  config.data.text_length = 16
  config.data.vocab_size = 128
  config.data.identities_per_batch = 4
  config.data.images_per_identity = 2
  config.data.eval_batch_size = 16
  config.model.width = 0.0625
  config.model.streams = 2  # the multi-stream gating path at under half the compile time of 4 streams
  config.model.stripes = 2
  config.model.embed_dim = 32
  config.model.word_dim = 16
  config.optim.warmup_steps = 2
  config.loss.triplet_warmup_steps = 0
  config.train.num_steps = 6
  config.train.log_every = 2
  config.train.checkpoint_every = 2
  config.train.eval_every = 3
  config.eval.num_picture_queries = 2
