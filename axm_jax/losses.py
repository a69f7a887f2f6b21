"""AXM-Net objectives (SPEC §2): shared-classifier ID loss, cross-modal batch-hard triplet, affinity; SDM and ITC.

All functions are pure and see the GLOBAL batch. How the terms are combined:
  id       = mean over the embeddings (V_G, V_P, T; V_P absent without part attention) of the label-smoothed
             cross-entropy of that embedding's logits from the one shared classifier, each a mean over the batch.
  triplet  = mean over the visual embeddings (V_G, V_P) and both directions (image anchors against texts, text
             anchors against images) of the batch-hard triplet loss on cosine distance, each a mean over the
             anchors that have at least one positive and one negative.
  affinity = mean over the visual embeddings of the affinity loss, each a mean over all B x B image-text pairs.
  sdm      = mean over the visual embeddings of the SDM loss (below), each over all B x B image-text pairs.
  itc      = mean over the visual embeddings of the identity-aware InfoNCE loss (below).
  total    = id_weight * id + w_t * triplet + affinity_weight * affinity + sdm_weight * sdm + itc_weight * itc,
             where w_t ramps linearly from 0 to triplet_weight over the first triplet_warmup_steps steps (from
             random initialisation the batch-hard triplet is cheapest to lower by collapsing every embedding onto
             one point, loss = margin; the ramp lets the ID and affinity terms spread the embeddings first).
Means (not sums) keep every term on the same scale whether part attention is on or off. sdm and itc (SPEC §2.1,
options beyond the paper) are computed and reported only when their weight is non-zero.

SDM and ITC, on a batch of B image-text pairs (v_i, t_i) with identities y:
  S_ij   = s * cos(v_i, t_j), s = 1 / tau: 1 / config.loss.contrastive_temperature, or, with
           config.loss.learn_temperature, the model's learned `contrastive_scale` (SPEC §2.1 S_ij = tau^-1 cos).
  q_ij   = [y_i == y_j] / sum_k [y_i == y_k], the identity-normalised label distribution (symmetric in i, j for
           the 1-to-1 pairs of a batch, so it is the target of both directions).
  p^{i2t}_ij = softmax_j(S_ij), p^{t2i}_ij = softmax_i(S_ij) (over the images for text j).
  SDM (IRRA, Jiang & Ye, CVPR 2023, and its compute_sdm):
           L_SDM = mean_i sum_j p^{i2t}_ij (log p^{i2t}_ij - log(q_ij + 1e-8))
                 + mean_j sum_i p^{t2i}_ij (log p^{t2i}_ij - log(q_ij + 1e-8)),
           i.e. KL(p || q) in both directions, summed as IRRA does.
  ITC (identity-aware InfoNCE; CLIP's loss when every identity has one pair in the batch):
           L_ITC = (mean_i -sum_j q_ij log p^{i2t}_ij + mean_j -sum_i q_ij log p^{t2i}_ij) / 2.

Under pmap the batch-level terms need the global batch. The train step must use `gathered_loss_fn` and then
average, not sum, the gradients over devices:

  def loss_fn(params):
    outputs, new_state = model.apply({'params': params, 'batch_stats': batch_stats}, image, text_ids, text_mask,
                                     train=True, mutable=['batch_stats'])
    total, terms = losses.gathered_loss_fn(outputs, labels, config.loss, axis_name='batch')
    return total, (terms, new_state)
  (_, (terms, new_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  grads = jax.lax.pmean(grads, axis_name='batch')

Why pmean: every device computes the same global loss f, and the transpose of the tiled all_gather is a
psum_scatter, so device d's gradient is sum over devices of df/d(its own examples) = N * (its share of df/dparams)
(the cross-replica BatchNorm psum transposes the same way, and parameters that reach f without a gather, such
as the affinity scale and the learned contrastive scale, get df/dparams on every device, which pmean leaves
unchanged). The mean over the N devices is therefore exactly df/dparams of the one-device computation on the
global batch; a psum would be N times too large. `terms` and the new batch_stats are already identical on every
device. tests/test_multi_device.py checks all of this against one device.
"""
import jax
import jax.numpy as jnp
import ml_collections
import optax

AFFINITY_FORMS = ('bce', 'paper')
# Model outputs with a batch axis that the losses read; these are what gathered_loss_fn all-gathers.
BATCHED_LOSS_INPUTS = ('global_visual', 'part_visual', 'text', 'global_visual_logits', 'part_visual_logits',
                       'text_logits')
# Learned scalars of the losses (model parameters, the same on every device): passed through ungathered.
LOSS_SCALARS = ('affinity_scale', 'affinity_bias', 'contrastive_scale')
SDM_EPSILON = 1e-8  # IRRA's epsilon inside log(q + epsilon)


def cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
  """[A, D] x [C, D] -> [A, C] cosine similarities."""
  a = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
  b = b / jnp.maximum(jnp.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
  return a @ b.T


def id_loss(logits: jax.Array, labels: jax.Array, label_smoothing: float) -> jax.Array:
  """Mean cross-entropy against (1 - eps) * one_hot + eps / num_classes."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()


def batch_hard_triplet(anchors: jax.Array, candidates: jax.Array, anchor_labels: jax.Array,
                       candidate_labels: jax.Array, margin: float) -> jax.Array:
  """Batch-hard triplet loss on cosine distance, anchors from one modality and candidates from the other.

  For anchor i: max(0, margin + max_{j: y_j = y_i} d_ij - min_{j: y_j != y_i} d_ij) with d = 1 - cos; the mean
  runs over anchors that have both a positive and a negative among the candidates (0 when none has).
  """
  distance = 1.0 - cosine_similarity(anchors.astype(jnp.float32), candidates.astype(jnp.float32))
  same = anchor_labels[:, None] == candidate_labels[None, :]
  hardest_positive = jnp.max(jnp.where(same, distance, -jnp.inf), axis=1)
  hardest_negative = jnp.min(jnp.where(same, jnp.inf, distance), axis=1)
  valid = same.any(axis=1) & (~same).any(axis=1)
  losses = jnp.where(valid, jax.nn.relu(margin + hardest_positive - hardest_negative), 0.0)
  return losses.sum() / jnp.maximum(valid.sum(), 1)


def cross_modal_triplet(image: jax.Array, text: jax.Array, labels: jax.Array, margin: float) -> jax.Array:
  """Mean of the two directions: image anchors against texts, text anchors against images."""
  return 0.5 * (batch_hard_triplet(image, text, labels, labels, margin) +
                batch_hard_triplet(text, image, labels, labels, margin))


def affinity_loss(image: jax.Array, text: jax.Array, labels: jax.Array, scale: jax.Array, bias: jax.Array,
                  form: str) -> jax.Array:
  """Binary cross-entropy over all image-text pairs, y_ij = [label_i == label_j], S_ij = cos(image_i, text_j).

  form 'bce':   -[y log sigmoid(s S + b) + (1 - y) log sigmoid(-(s S + b))]   (learned s, b)
  form 'paper': -[y log sigmoid(S) + (1 - y) log sigmoid(1 - S)]             (the paper's literal form)
  Mean over the B x B pairs.
  """
  similarity = cosine_similarity(image.astype(jnp.float32), text.astype(jnp.float32))
  matches = (labels[:, None] == labels[None, :]).astype(jnp.float32)
  if form == 'bce':
    return optax.sigmoid_binary_cross_entropy(scale * similarity + bias, matches).mean()
  if form == 'paper':
    return -(matches * jax.nn.log_sigmoid(similarity) +
             (1.0 - matches) * jax.nn.log_sigmoid(1.0 - similarity)).mean()
  raise ValueError(f'config.loss.affinity_form must be one of {AFFINITY_FORMS}, got {form!r}')


def identity_distribution(labels: jax.Array) -> jax.Array:
  """q_ij = [y_i == y_j] / sum_k [y_i == y_k]: row i is the label distribution of pair i over the batch."""
  matches = (labels[:, None] == labels[None, :]).astype(jnp.float32)
  return matches / matches.sum(axis=1, keepdims=True)


def sdm_loss(image: jax.Array, text: jax.Array, labels: jax.Array, scale: jax.Array | float) -> jax.Array:
  """Similarity distribution matching: KL(softmax(S) || q) image-to-text plus text-to-image (module docstring)."""
  logits = scale * cosine_similarity(image.astype(jnp.float32), text.astype(jnp.float32))
  log_q = jnp.log(identity_distribution(labels) + SDM_EPSILON)
  image_to_text = jax.nn.log_softmax(logits, axis=1)
  text_to_image = jax.nn.log_softmax(logits, axis=0)
  kl = lambda log_p, axis: (jnp.exp(log_p) * (log_p - log_q)).sum(axis=axis).mean()
  return kl(image_to_text, 1) + kl(text_to_image, 0)


def itc_loss(image: jax.Array, text: jax.Array, labels: jax.Array, scale: jax.Array | float) -> jax.Array:
  """Identity-aware InfoNCE: cross-entropy of softmax(S) against q, mean of both directions (module docstring)."""
  logits = scale * cosine_similarity(image.astype(jnp.float32), text.astype(jnp.float32))
  q = identity_distribution(labels)
  image_to_text = -(q * jax.nn.log_softmax(logits, axis=1)).sum(axis=1).mean()
  text_to_image = -(q * jax.nn.log_softmax(logits, axis=0)).sum(axis=0).mean()
  return 0.5 * (image_to_text + text_to_image)


def contrastive_scale(outputs: dict[str, jax.Array], loss_config: ml_collections.ConfigDict) -> jax.Array | float:
  """s = 1 / tau of SDM and ITC: the model's learned scale, or 1 / config.loss.contrastive_temperature."""
  if loss_config.learn_temperature:
    return outputs['contrastive_scale']
  return 1.0 / loss_config.contrastive_temperature


def triplet_weight(loss_config: ml_collections.ConfigDict, step: jax.Array | None) -> jax.Array | float:
  """The triplet weight after `step` steps: a linear ramp over triplet_warmup_steps; full when step is None."""
  if step is None or loss_config.triplet_warmup_steps <= 0:
    return loss_config.triplet_weight
  return loss_config.triplet_weight * jnp.clip(step / loss_config.triplet_warmup_steps, 0.0, 1.0)


def compute_losses(outputs: dict[str, jax.Array], labels: jax.Array, loss_config: ml_collections.ConfigDict,
                   step: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """All objectives on one (global) batch of model outputs after `step` training steps (None: no warm-up).

  Returns (total, {'id', 'triplet', 'affinity', 'total'} plus 'sdm' / 'itc' when their weight is non-zero).
  """
  if loss_config.affinity_form not in AFFINITY_FORMS:
    raise ValueError(f'config.loss.affinity_form must be one of {AFFINITY_FORMS}, got {loss_config.affinity_form!r}')
  visual_keys = [key for key in ('global_visual', 'part_visual') if key in outputs]
  text = outputs['text']
  identity = jnp.mean(jnp.stack([
      id_loss(outputs[f'{key}_logits'], labels, loss_config.label_smoothing) for key in visual_keys + ['text']]))
  triplet = jnp.mean(jnp.stack([
      cross_modal_triplet(outputs[key], text, labels, loss_config.margin) for key in visual_keys]))
  affinity = jnp.mean(jnp.stack([
      affinity_loss(outputs[key], text, labels, outputs['affinity_scale'], outputs['affinity_bias'],
                    loss_config.affinity_form) for key in visual_keys]))
  total = (loss_config.id_weight * identity + triplet_weight(loss_config, step) * triplet +
           loss_config.affinity_weight * affinity)
  terms = {'id': identity, 'triplet': triplet, 'affinity': affinity}
  scale = contrastive_scale(outputs, loss_config)
  for name, loss, weight in (('sdm', sdm_loss, loss_config.sdm_weight), ('itc', itc_loss, loss_config.itc_weight)):
    if weight:
      terms[name] = jnp.mean(jnp.stack([loss(outputs[key], text, labels, scale) for key in visual_keys]))
      total = total + weight * terms[name]
  return total, dict(terms, total=total)


def gather_outputs(outputs: dict[str, jax.Array], labels: jax.Array,
                   axis_name: str) -> tuple[dict[str, jax.Array], jax.Array]:
  """All-gathers (tiled, device order) the batched loss inputs and the labels; keeps the learned loss scalars."""
  gathered = {key: jax.lax.all_gather(outputs[key], axis_name, tiled=True)
              for key in BATCHED_LOSS_INPUTS if key in outputs}
  gathered.update({key: outputs[key] for key in LOSS_SCALARS if key in outputs})
  return gathered, jax.lax.all_gather(labels, axis_name, tiled=True)


def gathered_loss_fn(outputs: dict[str, jax.Array], labels: jax.Array, loss_config: ml_collections.ConfigDict,
                     axis_name: str, step: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """compute_losses on the global batch from inside pmap; pmean (not psum) the gradients (module docstring)."""
  gathered, all_labels = gather_outputs(outputs, labels, axis_name)
  return compute_losses(gathered, all_labels, loss_config, step)
