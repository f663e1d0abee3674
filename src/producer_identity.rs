//! Idempotent producer identity across a switch (placeholder, filled in by issue 8).

use bytes::Bytes;
use tokio::io::AsyncWrite;

use crate::session::Session;

#[derive(Default)]
pub struct ProducerIdentities {}

impl ProducerIdentities {
    pub(crate) async fn maybe_rewrite_produce<UW: AsyncWrite + Unpin + Send>(
        &self,
        _session: &Session,
        _frame: &Bytes,
        _version: i16,
        _uw: &mut UW,
        _out: &mut Vec<Bytes>,
    ) -> anyhow::Result<Option<Bytes>> {
        Ok(None)
    }

    pub(crate) fn maybe_rewrite_init(
        &self,
        _session: &Session,
        _frame: &Bytes,
        _version: i16,
    ) -> anyhow::Result<Option<Bytes>> {
        Ok(None)
    }
}
