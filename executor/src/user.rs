//! Resolving a Dockerfile `USER` string against the rootfs's `/etc/passwd` and `/etc/group`,
//! with runc's rules (which BuildKit uses).

/// The identity the container process runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (without the primary one unless listed as a member).
    pub groups: Vec<u32>,
    /// Home directory from the passwd entry, if there is one.
    pub home: Option<String>,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            // name:password:uid:gid:gecos:home:shell; malformed lines are skipped like runc does.
            Some(PasswdEntry {
                name: fields.first()?.to_string(),
                uid: fields.get(2)?.parse().ok()?,
                gid: fields.get(3)?.parse().ok()?,
                home: fields.get(5).map(|h| h.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            // name:password:gid:member,member
            Some(GroupEntry {
                name: fields.first()?.to_string(),
                gid: fields.get(2)?.parse().ok()?,
                members: fields
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Resolves `user` (`""`, `name`, `uid`, `name:group`, `uid:gid`, ...) given the contents of
/// the rootfs's passwd and group files (`None` when the file is missing).
pub(crate) fn resolve_user(
    user: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ExecUser, String> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    // An empty user means root, like runc's default.
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let group_part = group_part.filter(|g| !g.is_empty());

    let passwd_entries = passwd.map(parse_passwd).unwrap_or_default();
    let numeric_uid = user_part.parse::<u32>().ok();
    let entry = passwd_entries.iter().find(|e| match numeric_uid {
        Some(uid) => e.uid == uid,
        None => e.name == user_part,
    });

    let (uid, mut gid, user_name, home) = match (entry, numeric_uid) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name.as_str()), Some(e.home.clone())),
        (None, Some(uid)) => (uid, 0, None, None),
        (None, None) => {
            return Err(format!(
                "unable to find user {user_part}: no matching entries in passwd file"
            ))
        }
    };

    let group_entries = group.map(parse_group).unwrap_or_default();
    let mut groups = Vec::new();
    match group_part {
        Some(group_arg) => match group_arg.parse::<u32>() {
            Ok(numeric_gid) => gid = numeric_gid,
            Err(_) => {
                gid = group_entries
                    .iter()
                    .find(|g| g.name == group_arg)
                    .map(|g| g.gid)
                    .ok_or_else(|| {
                        format!(
                            "unable to find group {group_arg}: no matching entries in group file"
                        )
                    })?;
            }
        },
        None => {
            // Supplementary groups only apply when the group is implicit, as in runc.
            if let Some(name) = user_name {
                for g in &group_entries {
                    if g.members.iter().any(|m| m == name) && !groups.contains(&g.gid) {
                        groups.push(g.gid);
                    }
                }
            }
        }
    }

    Ok(ExecUser {
        uid,
        gid,
        groups,
        home: home.filter(|h| !h.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n\
                          broken line\nnobody:x:65534:65534::/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\napp:x:1000:\nextra:x:2000:app,other\nwheel:x:10:root\n";

    #[test]
    fn empty_user_is_root_with_home_from_passwd() {
        let u = resolve_user("", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((u.uid, u.gid), (0, 0));
        assert_eq!(u.groups, vec![10]);
        assert_eq!(u.home.as_deref(), Some("/root"));
    }

    #[test]
    fn name_resolves_uid_gid_and_supplementary_groups() {
        let u = resolve_user("app", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((u.uid, u.gid, u.groups.clone()), (1000, 1000, vec![2000]));
        assert_eq!(u.home.as_deref(), Some("/home/app"));
    }

    #[test]
    fn explicit_group_drops_supplementary_groups() {
        let u = resolve_user("app:extra", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 2000));
        assert!(u.groups.is_empty());
        let u = resolve_user("app:55", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!(u.gid, 55);
    }

    #[test]
    fn numeric_ids_need_no_entries() {
        let u = resolve_user("4242:4343", None, None).unwrap();
        assert_eq!((u.uid, u.gid), (4242, 4343));
        assert_eq!(u.home, None);
        let u = resolve_user("4242", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((u.uid, u.gid), (4242, 0));
        let u = resolve_user("1000", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((u.uid, u.gid, u.groups), (1000, 1000, vec![2000]));
    }

    #[test]
    fn unknown_names_are_errors() {
        let err = resolve_user("foo", Some(PASSWD), Some(GROUP)).unwrap_err();
        assert_eq!(
            err,
            "unable to find user foo: no matching entries in passwd file"
        );
        let err = resolve_user("app:nogroup", Some(PASSWD), Some(GROUP)).unwrap_err();
        assert_eq!(
            err,
            "unable to find group nogroup: no matching entries in group file"
        );
        assert!(resolve_user("foo", None, None).is_err());
    }
}
