//! Demo (todo)
pub async fn run(_messages: u32) -> anyhow::Result<()> {
    Ok(())
}
