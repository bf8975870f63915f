//! Notification templates: the built-in ones, and how user templates in
//! `templates_dir` are named.

/// Templates that exist without any file.
pub const BUILTIN: &[&str] = &["incident"];

/// The template name a file in `templates_dir` provides: `incident.subject.hbs`,
/// `incident.text.hbs` and `incident.html.hbs` all provide `incident`.
pub fn template_name_of(file_name: &str) -> Option<&str> {
    let stem = file_name.strip_suffix(".hbs")?;
    let name = stem.split('.').next()?;
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_one_template_share_its_name() {
        assert_eq!(template_name_of("incident.subject.hbs"), Some("incident"));
        assert_eq!(template_name_of("status.hbs"), Some("status"));
        assert_eq!(template_name_of("README.md"), None);
    }
}
