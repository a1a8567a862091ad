//! A change request as a rollout's candidate: only an approved one, its values opened (the
//! rollout drafts them through the change path again).

use mycosynth_subscriber::wire::{KeyChange, ProposalId};

use super::apply::ready_to_apply;
use crate::clock::meta_time;
use crate::failure::{invalid, Failure};
use crate::validate;
use crate::validator::instance::Validator;

impl Validator {
    /// The change set of approved change request `id`, values in clear.
    pub async fn approved_changes(
        &self,
        id: &str,
    ) -> Result<(Vec<KeyChange>, ProposalId), Failure> {
        let id = ProposalId::parse(id).map_err(|e| invalid(vec![validate::name_violation(&e)]))?;
        let (record, _) = self.stored_proposal(&id).await?;
        ready_to_apply(&record, meta_time().1)?;
        let changes = self.open_changes(&id, &record.changes).await?;
        Ok((changes, id))
    }
}
