//! Who may do what: the one table of actions and the roles allowed to take them.
//!
//! The gallery service checks it on every call, and the server's route table names an [`Action`]
//! per route, so a role set is written once, here. Searching a gallery is further narrowed by the
//! gallery's own policy (`Policy::search_roles`).

use crate::error::{GalleryError, Result};
use crate::policy::Role;
use Role::{Admin, Auditor, Enroller, Gate, Operator};

/// Every operation facegate authorises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Find faces in an image (no gallery touched).
    Detect,
    /// Compare two images 1:1 (nothing stored).
    CompareImages,
    /// 1:N search, or 1:1 against an enrolled subject.
    Search,
    CreateGallery,
    ListGalleries,
    ChangePolicy,
    Enrol,
    ReadSubject,
    Delete,
    Purge,
    /// Move a gallery's templates to a fresh transform.
    Rekey,
    RotateMasterKey,
    /// Create or revoke API keys (the access list).
    ManageApiKeys,
    ExportTemplates,
    ReadEnrolmentImage,
    ReadAudit,
    VerifyAudit,
    ReadMetrics,
}

impl Action {
    /// The roles allowed to take this action. The auditor never touches biometric data; the gate
    /// only compares.
    pub const fn roles(self) -> &'static [Role] {
        match self {
            Action::Detect => &[Gate, Enroller, Operator, Admin],
            Action::CompareImages | Action::Search => &[Gate, Operator, Admin],
            Action::CreateGallery => &[Operator, Admin],
            Action::ListGalleries => &[Operator, Auditor, Admin],
            Action::ChangePolicy => &[Admin],
            Action::Enrol | Action::Delete => &[Enroller, Operator, Admin],
            Action::ReadSubject | Action::Purge | Action::ReadEnrolmentImage => &[Operator, Admin],
            Action::Rekey
            | Action::RotateMasterKey
            | Action::ManageApiKeys
            | Action::ExportTemplates => &[Admin],
            Action::ReadAudit | Action::VerifyAudit => &[Auditor, Admin],
            Action::ReadMetrics => &[Operator, Auditor, Admin],
        }
    }

    /// What the action is called in refusals and logs.
    pub const fn describe(self) -> &'static str {
        match self {
            Action::Detect => "face detection",
            Action::CompareImages => "1:1 comparison",
            Action::Search => "searching a gallery",
            Action::CreateGallery => "creating a gallery",
            Action::ListGalleries => "listing galleries",
            Action::ChangePolicy => "changing a policy",
            Action::Enrol => "enrolment",
            Action::ReadSubject => "reading a subject record",
            Action::Delete => "deletion",
            Action::Purge => "purging",
            Action::Rekey => "rekeying",
            Action::RotateMasterKey => "key rotation",
            Action::ManageApiKeys => "managing API keys",
            Action::ExportTemplates => "exporting templates",
            Action::ReadEnrolmentImage => "reading an enrolment image",
            Action::ReadAudit => "reading the audit log",
            Action::VerifyAudit => "verifying the audit log",
            Action::ReadMetrics => "reading metrics",
        }
    }

    pub fn allows(self, role: Role) -> bool {
        self.roles().contains(&role)
    }

    /// `Ok` when `role` may take this action, `Forbidden` naming the roles that may.
    pub fn check(self, role: Role) -> Result<()> {
        if self.allows(role) {
            return Ok(());
        }
        let names: Vec<&str> = self.roles().iter().map(|r| r.as_str()).collect();
        Err(GalleryError::Forbidden(format!(
            "{} needs the {} role",
            self.describe(),
            match names.as_slice() {
                [one] => one.to_string(),
                [init @ .., last] => format!("{} or {last}", init.join(", ")),
                [] => "(no)".to_string(),
            }
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auditors_never_touch_biometric_data_and_gates_only_compare() {
        let biometric = [
            Action::Detect,
            Action::CompareImages,
            Action::Search,
            Action::Enrol,
            Action::ExportTemplates,
            Action::ReadEnrolmentImage,
        ];
        for a in biometric {
            assert!(!a.allows(Auditor), "{a:?}");
        }
        for a in [
            Action::Enrol,
            Action::Delete,
            Action::CreateGallery,
            Action::ChangePolicy,
            Action::ExportTemplates,
            Action::ReadAudit,
        ] {
            assert!(!a.allows(Gate), "{a:?}");
        }
        assert!(Action::RotateMasterKey.check(Admin).is_ok());
        let e = Action::Enrol.check(Gate).unwrap_err().to_string();
        assert!(
            e.contains("enroller, operator or admin"),
            "refusal names the roles: {e}"
        );
    }
}
