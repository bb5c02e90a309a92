r"""Paper defaults of KI2HOI on HICO-DET (docs/architecture.md "Training recipe").

Every field the code reads is defined here, with a one-line comment. Experiment
files import this module and override only what differs.

  python -m ki2hoi_jax.main --config=configs/default.py --workdir=/tmp/run \
      --config.dataset.root=/data/hico_20160224_det
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Returns the base (paper) configuration."""
  config = ml_collections.ConfigDict()
  config.mode = "train"  # 'train' | 'eval' | 'predict' | 'all' (train, then eval, then predict).
  config.seed = 0  # Seed of parameter init, dropout and data order.

  # ---------------------------------------------------------------- dataset
  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = "hico_det"  # 'hico_det' | 'vcoco'.
  config.dataset.root = ""  # Folder with images/ and annotations/; '' = synthetic data in the workdir.
  config.dataset.tfds_data_dir = ""  # Where the TFDS builder writes; '' = <workdir>/tfds.
  config.dataset.zero_shot_split = ""  # '' | 'rf_uc' | 'nf_uc' | 'uc' | 'uo' | 'uv'.
  config.dataset.train_fraction = 1.0  # Keep this random fraction of training images (Table III).
  config.dataset.on_bad_box = "clip"  # 'clip' (clip to the image and count) | 'reject' (error).
  config.dataset.on_bad_image = "skip"  # 'skip' (log a count) | 'fail' (error) for missing/corrupt images.
  config.dataset.max_pairs = 32  # Ground-truth pairs per image after padding.
  config.dataset.train_short_sides = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)  # Multi-scale short sides.
  config.dataset.max_size = 1333  # Longest side after resizing.
  config.dataset.crop = True  # DETR random crop (prob. 0.5, then a second resize 400-600).
  config.dataset.crop_short_sides = (400, 500, 600)  # Resize before the random crop.
  config.dataset.crop_min_size = 384  # Smallest side of the random crop.
  config.dataset.crop_max_size = 600  # Largest side of the random crop.
  config.dataset.hflip = True  # Random horizontal flip in training.
  config.dataset.color_jitter = 0.4  # Brightness/contrast/saturation jitter strength; 0 disables.
  config.dataset.eval_short_side = 800  # Short side at evaluation.
  config.dataset.size_buckets = 4  # Number of padded (H, W) bucket sizes per side length.
  config.dataset.clip_image_size = 224  # CLIP branch input (bicubic resize + centre crop).
  config.dataset.prefetch = 2  # Batches prefetched to the accelerator.
  config.dataset.synthetic_num_train = 400  # Synthetic dataset size when root is ''.
  config.dataset.synthetic_num_test = 100  # Synthetic test images when root is ''.
  config.dataset.synthetic_image_size = 256  # Longest side of synthetic images.
  config.dataset.synthetic_world = "basic"  # Synthetic scenes: 'basic' or 'compositional' (14 objects, shared verbs; HICO-DET only; docs/synthetic_world.md).

  # ------------------------------------------------------------------ model
  config.model = ml_collections.ConfigDict()
  config.model.interaction_space = "hoi"  # 'hoi' (600 prompts) | 'verb' (one prompt per verb).
  config.model.prompt_style = "gerund"  # Verb form of the interaction prompts: 'gerund' ("a photo of a person riding a bicycle", GEN-VLKT/HOICLIP) | 'bare' ("... ride a bicycle"; runs saved before this field).
  config.model.backbone_depth = 50  # ResNet depth: 18 | 34 | 50 | 101.
  config.model.backbone_width = 64  # Channels of the ResNet stem (64 = standard).
  config.model.d_model = 256  # Transformer width.
  config.model.num_heads = 8  # Attention heads.
  config.model.dim_feedforward = 2048  # FFN hidden width.
  config.model.dropout = 0.1  # Dropout in transformer layers.
  config.model.num_queries = 64  # Pair queries (human i + object i = pair i).
  config.model.anchor_queries = False  # Anchored, spatially modulated instance queries (reference boxes refined per layer, Gaussian attention prior): fast from scratch; no DETR weights for them.
  config.model.instance_decoder_layers = 3  # Instance interactor layers.
  config.model.verb_decoder_layers = 1  # Verb extraction decoder layers.
  config.model.verb_queries = "training_classes"  # Verb decoder class queries at evaluation: 'training_classes' (as trained; GEN-VLKT/HOICLIP) | 'all_classes' (every scored class).
  config.model.interaction_decoder_layers = 3  # Interaction representation decoder layers.
  config.model.encoder_layers = 3  # Ho-Pair Encoder layers.
  config.model.roi_size = 7  # ROI-Align grid of the encoder input; None keeps the full map.
  config.model.encoder_norm = "batch"  # 'batch' (synced, padding-aware) | 'masked' (per-sample masked norm).
  config.model.encoder_mlp_ratio = 4  # Hidden width of the Ho-Pair Encoder point-wise MLPs, in multiples of d_model (SwiftFormer).
  config.model.roi_sampling_ratio = 0  # Bilinear samples per ROI-Align bin along each axis; <= 0 = adaptive, ceil(ROI extent / roi_size) per axis as torchvision's default (a 7x7 grid on a 25x38 C5 map reads 4x6 samples per bin instead of aliasing 2x2).
  config.model.backbone_frozen_stages = 1  # Stem + stages 1..n of the ResNet get no updates (DETR: 1); 0 trains the whole backbone.
  config.model.backbone_norm = "frozen"  # 'frozen' (DETR FrozenBatchNorm; needs a checkpoint) | 'group' (GroupNorm from scratch; its statistics include padding).
  config.model.backbone_dilation = False  # Dilate the last ResNet stage: stride 16 instead of 32 (DETR-DC5); finer boxes, about 4x the decoder memory.
  config.model.backbone_mask_padding = False  # Zero padding before every backbone conv (exact padding invariance; DETR: off).
  config.model.dtype = "float32"  # Compute dtype of the trainable parts.
  config.model.frozen_dtype = "float32"  # Compute dtype of frozen CLIP and backbone ('bfloat16' saves time).
  config.model.logit_scale_init = 14.285714285714286  # 1 / 0.07, learnable verb-predictor logit scale.
  # Ablation switches (Table IV, configs/ablations/); the defaults are the paper model.
  config.model.encoder_type = "ho_pair"  # 'ho_pair' (Ho-Pair Encoder) | 'detr' (post-norm DETR transformer encoder, same depth).
  config.model.clip_cross_attention = True  # Interaction decoder cross-attends to V_sp (CLIP image tokens).
  config.model.classifier = "clip_text"  # 'clip_text' (cosine vs CLIP text embeddings) | 'linear' (learned heads over the training classes, no CLIP text; unseen classes are not scored).
  config.model.verb_decoder = True  # Verb feature learning: verb extraction decoder + per-pair V_verb retrieval.
  # CLIP ViT-B/32 (image and text towers).
  config.model.clip = ml_collections.ConfigDict()
  config.model.clip.image_size = 224  # Input resolution of the CLIP image tower.
  config.model.clip.patch_size = 32  # ViT patch size.
  config.model.clip.vision_width = 768  # ViT width.
  config.model.clip.vision_layers = 12  # ViT depth.
  config.model.clip.vision_heads = 12  # ViT heads.
  config.model.clip.embed_dim = 512  # Joint image-text embedding size.
  config.model.clip.text_width = 512  # Text transformer width.
  config.model.clip.text_layers = 12  # Text transformer depth.
  config.model.clip.text_heads = 8  # Text transformer heads.
  config.model.clip.context_length = 77  # Token positions.
  config.model.clip.vocab_size = 49408  # BPE vocabulary size.

  # ------------------------------------------------------ pretrained weights
  config.init = ml_collections.ConfigDict()
  config.init.clip_checkpoint = ""  # Converted CLIP checkpoint (python -m ki2hoi_jax.weights.convert_clip); '' = random.
  config.init.detr_checkpoint = ""  # Converted DETR-R50 checkpoint (python -m ki2hoi_jax.weights.convert_detr); '' = random.
  config.init.tokenizer_dir = ""  # transformers CLIP folder with vocab.json/merges.txt; '' = packaged BPE vocab.
  config.init.synthetic_clip_steps = 0  # > 0 and clip_checkpoint '': pretrain a synthetic-knowledge CLIP this many steps into <workdir>/clip/ once and use it (python -m ki2hoi_jax.clip.pretrain; the demo).
  config.init.synthetic_clip_images = 2000  # Renderer images of that CLIP's web corpus.
  config.init.synthetic_detector_steps = 0  # > 0, detr_checkpoint '' and the synthetic dataset: pretrain the detector this many steps on the synthetic detection corpus into <workdir>/detector/ once and use it (python -m ki2hoi_jax.train.pretrain_detector; the demo).
  config.init.synthetic_detector_images = 2000  # Renderer images of that detector's corpus.
  config.init.allow_partial = False  # Allow loading a checkpoint that lacks or mismatches some tensors.
  config.init.allow_random = False  # Allow a run on a real dataset (dataset.root set) with clip_checkpoint or detr_checkpoint '' (random CLIP / backbone and decoders); without it such a run stops with an error.

  # --------------------------------------------------- matching and losses
  config.loss = ml_collections.ConfigDict()
  config.loss.cost_interaction = 1.0  # Hungarian cost weight: interaction classification.
  config.loss.cost_object_class = 1.0  # Hungarian cost weight: object classification.
  config.loss.cost_bbox = 2.5  # Hungarian cost weight: L1 (max of human/object).
  config.loss.cost_giou = 1.0  # Hungarian cost weight: GIoU (max of human/object).
  config.loss.interaction_loss_coef = 2.0  # Interaction focal loss weight.
  config.loss.object_class_loss_coef = 1.0  # Object cross-entropy weight.
  config.loss.human_class_loss_coef = 1.0  # Human-score cross-entropy weight.
  config.loss.bbox_loss_coef = 2.5  # Box L1 weight (human + object).
  config.loss.giou_loss_coef = 1.0  # Box GIoU weight (human + object).
  config.loss.no_object_weight = 0.1  # Cross-entropy weight of the no-object class.
  config.loss.object_classes = "all"  # Objects of the object cross-entropy's softmax: 'all' (the paper's) | 'trained' (those of the training split's seen HOIs; the unseen objects of 'uo' get no gradient from it; the same as 'all' in the other splits).
  config.loss.focal_alpha = 0.5  # Interaction focal loss alpha.
  config.loss.focal_gamma = 2.0  # Interaction focal loss gamma.
  config.loss.reconstruction = "l1"  # L_re: 'l1' | 'l2' | 'l1+l2' | 'none' (Table V).
  config.loss.reconstruction_loss_coef = 20.0  # L_re weight (GEN-VLKT's mimic weight).
  config.loss.reconstruction_form = "raw_all_layers"  # 'raw_all_layers' (GEN-VLKT mimic: raw features, every decoder layer) | 'unit_last_layer' (L2-normalised, final layer).
  config.loss.aux_loss = True  # Losses on every intermediate decoder layer.

  # ----------------------------------------------------------- optimisation
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 1e-4  # AdamW learning rate of the trainable non-backbone parts.
  config.optimizer.backbone_learning_rate = 1e-5  # Learning rate of the ResNet backbone.
  config.optimizer.clip_learning_rate = 1e-5  # Learning rate of the weights initialised from CLIP text embeddings (the object classifier's projection; GEN-VLKT's --lr_clip with --ft_clip_with_small_lr); 0 keeps them fixed, as --fix_clip does in GEN-VLKT's zero-shot and all HOICLIP scripts.
  config.optimizer.weight_decay = 1e-4  # AdamW weight decay.
  config.optimizer.pretrained_anchor = 0.0  # > 0: the detector's parameters (backbone, input_proj, encoder, instance interactor) also decay toward the values their checkpoint gave them, at this rate (train/optimizer.py); 0: off (the paper).
  config.optimizer.grad_clip_norm = 0.1  # Global-norm gradient clipping; 0 disables.
  config.optimizer.num_epochs = 90  # Training epochs.
  config.optimizer.lr_drop_epoch = 60  # Multiply learning rates by 0.1 from this epoch.
  config.optimizer.grad_accum_steps = 1  # Micro-batches accumulated per update.
  # Paper: "batch size 8 on 4 A6000 GPUs". In the code bases it builds on,
  # --batch_size is per GPU (process): GEN-VLKT's configs/hico_s*.sh launch
  # torch.distributed.launch --nproc_per_node=8 with main.py's default
  # --batch_size 2 (16 images per update), HOICLIP's scripts/train_hico*.sh
  # --nproc_per_node=2 --batch_size 8 (16); both main.py build
  # BatchSampler(DistributedSampler(...), args.batch_size) in every process.
  # So 8 per GPU x 4 GPUs = 32 images per update. Both keep AdamW lr 1e-4,
  # lr_backbone 1e-5, lr_clip 1e-5 whatever the GPU count (no scaling with
  # the batch), and so do we. Fewer devices: optimizer.grad_accum_steps.
  config.batch_size = 32  # Global batch size (all devices, all hosts) of one optimizer update.
  config.num_train_steps = -1  # Overrides num_epochs when > 0.

  # ---------------------------------------------------------------- inference
  config.inference = ml_collections.ConfigDict()
  config.inference.score_fusion = "sum"  # 'sum' (paper) | 'genvlkt' | 'product'.
  config.inference.top_k = 100  # Candidates kept per image before NMS.
  # Weight of CLIP's own score of a pair's crop in the probability of the
  # classes outside the training classifier (models/clip_pair_scores.py);
  # 0: off, the paper's pipeline. Costs one CLIP image pass per query.
  config.inference.clip_pair_fusion = 0.0
  config.inference.nms = True  # Per-HOI-class triplet NMS.
  config.inference.nms_threshold = 0.7  # Drop when IoU_h^alpha * IoU_o^beta exceeds this.
  config.inference.nms_alpha = 1.0  # Exponent of the human IoU in triplet NMS.
  config.inference.nms_beta = 0.5  # Exponent of the object IoU in triplet NMS.
  config.eval_batch_size = 8  # Global batch size at evaluation.
  # HICO-DET mAP that drives eval/mAP, the best checkpoint and the headline:
  # 'python' (GEN-VLKT's evaluator) | 'official' (HICO-DET's MATLAB protocol,
  # needs <dataset root>/anno_bbox.mat). Both are reported when the file exists.
  config.eval_protocol = "python"

  # ------------------------------------------------------- run bookkeeping
  config.log_every_steps = 50  # Scalars to TensorBoard and the log.
  config.eval_every_steps = 0  # Evaluation hook period; 0 = only at the end.
  config.eval_at_start = False  # Also evaluate the untrained model (step 0) as a baseline.
  config.checkpoint_every_steps = 1000  # Orbax checkpoint period.
  config.keep_checkpoints = 3  # Most recent checkpoints kept (plus the best by mAP).
  config.progress_bar = True  # tqdm progress bars on long loops.
  config.compilation_cache = True  # Persistent XLA compilation cache in <workdir>/jax_cache (a rerun or eval skips compiling; the train step always compiles).
  config.distributed = False  # Call jax.distributed.initialize() (multi-host).
  config.coordinator_address = ""  # host:port of process 0 ('' = from the environment).
  config.num_processes = 0  # Number of processes (0 = from the environment).
  config.process_id = -1  # This process's index (-1 = from the environment).

  # ---------------------------------------------------------------- predict
  config.predict = ml_collections.ConfigDict()
  config.predict.images = ""  # Comma-separated image paths for mode=predict ('' = a few test images).
  config.predict.score_threshold = 0.25  # Minimum confidence S_h*S_o*S_verb of a written and drawn triplet (about the verb's probability on a confident pair); ranking and NMS use inference.score_fusion.
  config.predict.top_k = 10  # Triplets per image in predict output.
  config.predict.verbs = ""  # Open vocabulary: comma-separated verbs replacing the class list.
  config.predict.objects = ""  # Open vocabulary: comma-separated objects.
  config.predict.prompts_file = ""  # Open vocabulary: file of 'verb,object' or plain prompts, one per line.
  config.predict.checkpoint = "auto"  # Workdir checkpoint to predict with: 'auto' (best, else latest) | 'best' | 'latest'.
  return config
