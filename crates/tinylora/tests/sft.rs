//! The supervised baseline on a tiny model: the (weighted) NLL gradient with respect to `v`
//! equals finite differences, micro-batches add up, per-token weights give the weighted mean of
//! the examples' losses, and AdamW on 13 floats lowers the loss of fixed targets.

use std::path::Path;

use burn::tensor::Device;
use tinylora::adapter::TinyLora;
use tinylora::adapter::config::TinyLoraConfig;
use tinylora::checkpoint::Checkpoint;
use tinylora::micro_batch::MicroBatch;
use tinylora::model::CausalLm;
use tinylora::numerics::{
    central_difference, check_derivative, gradient_tolerance, logprob_tolerance,
};
use tinylora::optim::{AdamW, AdamWConfig, global_norm};
use tinylora::readback::block_on;
use tinylora::sft::{SftUpdateConfig, sft_loss_and_gradients, sft_update};

fn setup() -> (CausalLm, TinyLora) {
    let device = Device::flex().autodiff();
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qwen2/untied_bf16_tf5");
    let mut model = Checkpoint::open(&dir).unwrap().load(&device).unwrap();
    let adapter = block_on(TinyLora::init(&mut model, TinyLoraConfig::default())).unwrap();
    adapter.attach(&mut model).unwrap();
    (model, adapter)
}

/// Per-token weights for [`data`]'s targets, uneven within and across targets.
fn uneven_weights() -> Vec<Vec<f32>> {
    vec![
        vec![1.0, 1.0, 1.0, 5.0],
        vec![1.0, 3.0],
        vec![2.0, 2.0, 0.5],
    ]
}

fn data() -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let prompts = vec![vec![3, 1, 4], vec![9, 2], vec![6, 5, 3, 5]];
    let targets = vec![vec![20, 21, 22, 23], vec![20, 21], vec![20, 21, 22]];
    (prompts, targets)
}

#[test]
fn gradient_equals_finite_differences_and_micro_batches_add_up() {
    let (model, mut adapter) = setup();
    adapter.v = vec![(0..13).map(|i| 0.2 * ((i as f32) * 0.9).cos()).collect()];
    let (prompts, targets) = data();
    let uneven = uneven_weights();
    let loss_and_gradients = |adapter: &TinyLora, rows: usize, weights: Option<&[Vec<f32>]>| {
        block_on(sft_loss_and_gradients(
            &model,
            adapter,
            &prompts,
            &targets,
            weights,
            MicroBatch::Rows(rows),
        ))
        .unwrap()
    };
    let positions = 4 + 4;
    let mut tol = 0.0;
    for weights in [None, Some(uneven.as_slice())] {
        let (loss, grads) = loss_and_gradients(&adapter, 8, weights);
        let (split_loss, split_grads) = loss_and_gradients(&adapter, 1, weights);
        // The two split the same sums differently: within the summation-order bound, while a
        // micro-batch weighted wrongly would be off by a fraction of the whole.
        let loss_tol = logprob_tolerance(&model.config, positions, loss.abs());
        assert!(
            (loss - split_loss).abs() <= loss_tol,
            "{loss} vs {split_loss}"
        );
        let grad_norm = global_norm(&grads[0]);
        tol = gradient_tolerance(&model.config, positions, grad_norm);
        println!("gradient norm {grad_norm:.3e}, tolerance {tol:.3e}");
        for (a, b) in grads[0].iter().zip(&split_grads[0]) {
            assert!(
                f64::from((a - b).abs()) <= tol,
                "{a} vs {b} (tolerance {tol:e})"
            );
        }
    }
    let (_, grads) = loss_and_gradients(&adapter, 8, Some(&uneven));
    // Finite differences: within three times their own error estimate (truncation and this
    // machine's rounding), plus the analytic gradient's own summation-order bound.
    for k in [1, 6, 11] {
        let saved = adapter.v[0][k];
        let difference = central_difference(
            |delta| {
                adapter.v[0][k] = saved + delta as f32;
                let (l, _) = loss_and_gradients(&adapter, 8, Some(&uneven));
                adapter.v[0][k] = saved;
                l
            },
            2e-3,
        );
        check_derivative(f64::from(grads[0][k]), difference, tol)
            .unwrap_or_else(|e| panic!("v[{k}]: {e}"));
    }
}

#[test]
fn weights_give_the_weighted_mean_of_each_examples_loss() {
    let (model, mut adapter) = setup();
    adapter.v = vec![(0..13).map(|i| 0.1 * (i as f32).sin()).collect()];
    let (prompts, targets) = data();
    let loss = |i: std::ops::Range<usize>, weights: Option<&[Vec<f32>]>| {
        block_on(sft_loss_and_gradients(
            &model,
            &adapter,
            &prompts[i.clone()],
            &targets[i],
            weights,
            MicroBatch::Auto,
        ))
        .unwrap()
        .0
    };
    // Example k's tokens all weigh c[k]: the loss is Σ c·n·L / Σ c·n over the examples' own
    // token-mean losses L and lengths n.
    let c = [1.0f32, 4.0, 0.25];
    let weights: Vec<Vec<f32>> = targets
        .iter()
        .zip(c)
        .map(|(t, c)| vec![c; t.len()])
        .collect();
    let (mut sum, mut total) = (0.0, 0.0);
    for (k, t) in targets.iter().enumerate() {
        let n = t.len() as f64;
        sum += f64::from(c[k]) * n * loss(k..k + 1, None);
        total += f64::from(c[k]) * n;
    }
    let weighted = loss(0..3, Some(&weights));
    let tol = logprob_tolerance(&model.config, 8, weighted.abs());
    assert!(
        (weighted - sum / total).abs() <= tol,
        "{weighted} vs {}",
        sum / total
    );
    // Uniform weights are the plain token mean; a mismatched or all-zero weighting is refused.
    let doubled: Vec<Vec<f32>> = targets.iter().map(|t| vec![2.0; t.len()]).collect();
    let plain = loss(0..3, None);
    assert!((loss(0..3, Some(&doubled)) - plain).abs() <= tol);
    let short = vec![vec![1.0; 3], vec![1.0; 2], vec![1.0; 3]];
    let zero: Vec<Vec<f32>> = targets.iter().map(|t| vec![0.0; t.len()]).collect();
    for bad in [short, zero] {
        assert!(
            block_on(sft_loss_and_gradients(
                &model,
                &adapter,
                &prompts,
                &targets,
                Some(&bad),
                MicroBatch::Auto,
            ))
            .is_err()
        );
    }
}

#[test]
fn updates_lower_the_loss_of_the_targets() {
    let (model, mut adapter) = setup();
    let (prompts, targets) = data();
    let mut optimizer = AdamW::new(AdamWConfig::default(), &adapter.v);
    let config = SftUpdateConfig {
        micro_batch: MicroBatch::Rows(2),
        lr: 0.05,
        max_grad_norm: 1.0,
    };
    let mut losses = Vec::new();
    for _ in 0..25 {
        let stats = block_on(sft_update(
            &model,
            &mut adapter,
            &mut optimizer,
            &prompts,
            &targets,
            None,
            &config,
        ))
        .unwrap();
        assert_eq!(stats.tokens, 9);
        losses.push(stats.loss);
    }
    println!("SFT loss {:.4} -> {:.4}", losses[0], losses[24]);
    assert!(losses[24] < losses[0] - 0.05, "{losses:?}");
}
