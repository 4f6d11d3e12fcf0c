//! `trainer logits`: the logits of the last position of a token sequence.

use anyhow::{Result, ensure};
use tinylora::readback::{block_on, to_vec_f32};

use super::common::{ModelArgs, parse_ids};

/// Arguments of `trainer logits`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Comma-separated token ids, e.g. 5,77,301.
    #[arg(long)]
    ids: String,
    /// Print `{"last_logits": [...]}` instead of the top tokens.
    #[arg(long)]
    json: bool,
}

/// Prints the last position's logits.
pub fn run(args: Args) -> Result<()> {
    let ids = parse_ids(&args.ids)?;
    ensure!(!ids.is_empty(), "--ids is empty");
    let loaded = args.model.load()?;
    let model = &loaded.model;
    model.check_prompts(std::slice::from_ref(&ids), 0)?;
    let mut cache = model.new_cache(vec![0]);
    let logits = block_on(to_vec_f32(model.forward_last(
        &[ids],
        &mut cache,
        &loaded.mixes,
    )))?;
    if args.json {
        println!("{}", serde_json::json!({ "last_logits": logits }));
    } else {
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        for &i in order.iter().take(10) {
            println!("{i:>8}  {:.6}", logits[i]);
        }
    }
    Ok(())
}
