//! The GRPO update on a tiny model: micro-batches add up to the mini-batch, the gradient of
//! the full loss (policy term + β·k3 KL) with respect to `v` equals central finite
//! differences of the loss, and another engine's samples are weighted by their log-prob gap.

use std::path::Path;

use burn::tensor::Device;
use tinylora::adapter::TinyLora;
use tinylora::adapter::config::TinyLoraConfig;
use tinylora::checkpoint::Checkpoint;
use tinylora::generate::GenerateConfig;
use tinylora::grpo::importance::IsCorrection;
use tinylora::grpo::pipeline::{
    GrpoStepConfig, LocalEngine, RolloutEngine, Rollouts, Score, loss_and_gradients, prepare,
};
use tinylora::grpo::{Clip, LossType};
use tinylora::micro_batch::MicroBatch;
use tinylora::model::CausalLm;
use tinylora::numerics::{
    central_difference, check_derivative, gradient_tolerance, logprob_tolerance,
};
use tinylora::optim::global_norm;
use tinylora::readback::block_on;
use tinylora::sampling::SamplingConfig;

/// A tiny model with a fully tied u = 13 adapter whose `v` is not zero, and scored rollouts
/// sampled at `v0`, with reference log-probs, evaluated at a moved `v` so ratios differ from 1.
fn setup() -> (CausalLm, TinyLora, Rollouts) {
    let device = Device::flex().autodiff();
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qwen2/untied_bf16_tf5");
    let mut model = Checkpoint::open(&dir).unwrap().load(&device).unwrap();
    let mut adapter = block_on(TinyLora::init(&mut model, TinyLoraConfig::default())).unwrap();
    adapter.attach(&mut model).unwrap();
    adapter.v = vec![(0..13).map(|i| 0.3 * ((i as f32) * 0.7).sin()).collect()];
    let prompts: Vec<Vec<u32>> = (0..4u32).map(|i| vec![5 + i, 40 + 3 * i, 7]).collect();
    let generation = GenerateConfig {
        max_new_tokens: 5,
        sampling: SamplingConfig {
            temperature: Some(0.9),
            top_k: None,
            top_p: None,
        },
        seed: 3,
        stop_tokens: vec![11, 12, 13],
    };
    // A KL penalty, so that `prepare` scores the samples under the base model too.
    let config = GrpoStepConfig {
        kl_beta: 0.5,
        micro_batch: MicroBatch::Rows(3),
        ..GrpoStepConfig::default()
    };
    let engine = LocalEngine {
        model: &model,
        mixes: adapter.current_mixes(&model).unwrap(),
    };
    let samples = block_on(engine.sample(&prompts, config.group_size, &generation)).unwrap();
    let scores: Vec<Score> = samples
        .completions
        .iter()
        .map(|c| Score {
            reward: f32::from(u8::from(c[0].is_multiple_of(2))),
            correct: false,
        })
        .collect();
    let rollouts = block_on(prepare(&model, &engine.mixes, samples, &scores, &config)).unwrap();
    assert!(
        rollouts.advantages.iter().any(|&a| a != 0.0),
        "no signal in {:?}",
        rollouts.rewards
    );
    assert!(rollouts.ref_logprobs.is_some());
    for (i, x) in adapter.v[0].iter_mut().enumerate() {
        *x += 0.15 * ((i as f32) * 1.3).cos();
    }
    (model, adapter, rollouts)
}

fn config(loss_type: LossType, micro_batch: usize) -> GrpoStepConfig {
    GrpoStepConfig {
        loss_type,
        micro_batch: MicroBatch::Rows(micro_batch),
        kl_beta: 0.5,
        ..GrpoStepConfig::default()
    }
}

#[test]
fn micro_batches_add_up_to_the_mini_batch() {
    let (model, adapter, rollouts) = setup();
    let rows: Vec<usize> = (0..rollouts.samples.prompts.len()).collect();
    for loss_type in [LossType::Grpo, LossType::Dapo, LossType::DrGrpo] {
        let whole = block_on(loss_and_gradients(
            &model,
            &adapter,
            &rollouts,
            &rows,
            &config(loss_type, usize::MAX),
        ))
        .unwrap();
        let split = block_on(loss_and_gradients(
            &model,
            &adapter,
            &rollouts,
            &rows,
            &config(loss_type, 3),
        ))
        .unwrap();
        // Within the summation-order bound of the log-probs the loss and KL come from; a
        // micro-batch weighted wrongly would be off by a fraction of the whole.
        // A log-prob under this near-uniform random model is about −ln(vocab); twice that bounds
        // the sampled tokens'.
        let logprob_scale = 2.0 * (model.config.vocab_size as f64).ln();
        let positions = 3 + 5;
        let logprob_tol = logprob_tolerance(&model.config, positions, logprob_scale);
        println!(
            "{loss_type:?}: loss {} vs {}, kl {} vs {}, log-prob tolerance {logprob_tol:.2e}",
            whole.loss, split.loss, whole.kl, split.kl
        );
        assert!(
            (whole.loss - split.loss).abs() <= logprob_tol * (1.0 + whole.loss.abs()),
            "{loss_type:?}"
        );
        assert!((whole.kl - split.kl).abs() <= logprob_tol * (1.0 + whole.kl) && whole.kl > 0.0);
        assert!(whole.grads[0].iter().any(|&g| g != 0.0));
        let tol = gradient_tolerance(&model.config, positions, global_norm(&whole.grads[0]));
        for (a, b) in whole.grads[0].iter().zip(&split.grads[0]) {
            assert!(
                f64::from((a - b).abs()) <= tol,
                "{a} vs {b} (tolerance {tol:e})"
            );
        }
    }
}

#[test]
fn gradient_equals_finite_differences() {
    let (model, mut adapter, rollouts) = setup();
    let rows: Vec<usize> = (0..rollouts.samples.prompts.len()).collect();
    // Clip bounds out of reach, so the loss is smooth (the clipped branches are checked
    // against the formula in `grpo/objective.rs`); the KL term stays on.
    let config = GrpoStepConfig {
        clip: Clip {
            low: 0.95,
            high: 20.0,
            dual: None,
        },
        ..config(LossType::Dapo, usize::MAX)
    };
    let at = block_on(loss_and_gradients(
        &model, &adapter, &rollouts, &rows, &config,
    ))
    .unwrap();
    // Finite differences: within three times their own error estimate (truncation and this
    // machine's rounding), plus the analytic gradient's own summation-order bound.
    let tol = gradient_tolerance(&model.config, 3 + 5, global_norm(&at.grads[0]));
    let mut checked = 0;
    for k in [0, 4, 9, 12] {
        let saved = adapter.v[0][k];
        let difference = central_difference(
            |delta| {
                adapter.v[0][k] = saved + delta as f32;
                let loss = block_on(loss_and_gradients(
                    &model, &adapter, &rollouts, &rows, &config,
                ))
                .unwrap()
                .loss;
                adapter.v[0][k] = saved;
                loss
            },
            1e-3,
        );
        check_derivative(f64::from(at.grads[0][k]), difference, tol)
            .unwrap_or_else(|e| panic!("v[{k}]: {e}"));
        checked += 1;
    }
    assert_eq!(checked, 4);
}

/// Samples from another engine whose log-probs are the trainer's minus δ on every token get
/// the importance weight e^δ on every token (below the cap): the policy loss and its gradient
/// are e^δ times those of the same samples taken as the trainer's own.
#[test]
fn another_engines_samples_are_weighted_by_their_gap() {
    let (model, adapter, rollouts) = setup();
    let mixes = adapter.current_mixes(&model).unwrap();
    let plain = GrpoStepConfig {
        kl_beta: 0.0,
        ..config(LossType::Dapo, usize::MAX)
    };
    let corrected = GrpoStepConfig {
        importance: Some(IsCorrection::TIS),
        ..plain.clone()
    };
    let scores: Vec<Score> = rollouts
        .rewards
        .iter()
        .map(|&reward| Score {
            reward,
            correct: false,
        })
        .collect();
    // The trainer's own log-probs at the current v: π_old of `prepare` with a correction.
    let own = block_on(prepare(
        &model,
        &mixes,
        rollouts.samples.clone(),
        &scores,
        &corrected,
    ))
    .unwrap();
    let delta = 0.3f32;
    let mut from_engine = own.samples.clone();
    for row in &mut from_engine.logprobs {
        row.iter_mut().for_each(|x| *x -= delta);
    }
    let weighted = block_on(prepare(&model, &mixes, from_engine, &scores, &corrected)).unwrap();
    let gap = weighted.gap.unwrap();
    println!("{gap:?}");
    assert!((gap.gap_mean - f64::from(delta)).abs() < 1e-4 && gap.clipped_fraction == 0.0);
    let unweighted = Rollouts {
        is_weights: None,
        gap: None,
        ..own
    };
    let rows: Vec<usize> = (0..unweighted.samples.prompts.len()).collect();
    let a = block_on(loss_and_gradients(
        &model, &adapter, &weighted, &rows, &plain,
    ))
    .unwrap();
    let b = block_on(loss_and_gradients(
        &model,
        &adapter,
        &unweighted,
        &rows,
        &plain,
    ))
    .unwrap();
    let scale = f64::from(delta).exp();
    // Each weight is e^δ up to the rounding of the shifted f32 log-probs (|logp| ≤ 2 ln vocab).
    let logprob_scale = 2.0 * (model.config.vocab_size as f64).ln();
    let weight_err = 4.0 * tinylora::numerics::F32_UNIT_ROUNDOFF * logprob_scale;
    let positions = 3 + 5;
    let tol = logprob_tolerance(&model.config, positions, logprob_scale) + weight_err;
    assert!(
        (a.loss - scale * b.loss).abs() <= tol * (1.0 + a.loss.abs()),
        "{} vs e^δ·{}",
        a.loss,
        b.loss
    );
    let norm = global_norm(&a.grads[0]);
    let grad_tol = gradient_tolerance(&model.config, positions, norm) + weight_err * norm;
    for (x, y) in a.grads[0].iter().zip(&b.grads[0]) {
        assert!(
            (f64::from(*x) - scale * f64::from(*y)).abs() <= grad_tol,
            "{x} vs e^δ·{y} (tolerance {grad_tol:e})"
        );
    }
}
