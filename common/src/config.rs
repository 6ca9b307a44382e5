//! Typed configuration, read once per cold start from environment variables. Every problem is
//! reported with the name of the variable at fault and never with its value.

pub use crate::protocol::im::ImConfig;
pub use crate::protocol::secret::Secret;
pub use crate::protocol::wechat::app::{AppKind, WechatApp};
use crate::protocol::wechat::crypto::MessageCrypto;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    pub var: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(var: &str, problem: impl Into<String>) -> Self {
        ConfigError {
            var: var.to_owned(),
            problem: problem.into(),
        }
    }
}

/// Which IM callback queues notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyTrigger {
    AfterSend,
    BeforeSend,
}

#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub app: AppKind,
    pub template_id: String,
    /// Template keyword → pattern with `{sender}`, `{preview}`, `{time}`, `{count}`.
    pub data: Vec<(String, String)>,
    pub page: Option<String>,
    pub miniprogram_state: Option<String>,
    pub lang: Option<String>,
    pub debounce_secs: i64,
    pub timezone: jiff::tz::TimeZone,
    pub timezone_name: String,
    pub trigger: NotifyTrigger,
    /// Local-time window (minutes after midnight, start..end, may wrap midnight) in which
    /// notifications are held back (recorded as skipped) instead of sent.
    pub quiet_hours: Option<(u32, u32)>,
    /// `query_online_status`'s `PushOnline` (a native app the vendor push channel reaches)
    /// counts as online (`NOTIFY_PUSH_ONLINE=online`): IM's own offline push tells the user.
    pub push_online_is_online: bool,
    /// A group message that @-mentions everyone notifies the group's members
    /// (`NOTIFY_GROUP_AT_ALL`), at most `group_at_all_max` of them.
    pub group_at_all: bool,
    pub group_at_all_max: i64,
}

impl NotifyConfig {
    /// When the quiet hours that contain `now` end, if they do.
    pub fn quiet_end(&self, now: i64) -> Option<i64> {
        let (start, end) = self.quiet_hours?;
        let z = jiff::Timestamp::from_second(now)
            .ok()?
            .to_zoned(self.timezone.clone());
        let m = z.hour() as u32 * 60 + z.minute() as u32;
        let inside = if start < end {
            (start..end).contains(&m)
        } else {
            m >= start || m < end
        };
        if !inside {
            return None;
        }
        let t = jiff::civil::time((end / 60) as i8, (end % 60) as i8, 0, 0);
        let today = z
            .date()
            .to_datetime(t)
            .to_zoned(self.timezone.clone())
            .ok()?;
        let at = if today.timestamp() > z.timestamp() {
            today
        } else {
            z.date()
                .tomorrow()
                .ok()?
                .to_datetime(t)
                .to_zoned(self.timezone.clone())
                .ok()?
        };
        Some(at.timestamp().as_second())
    }

    /// `2024年1月2日 15:04`: the `time` keyword's documented form, in the configured time zone.
    pub fn format_time(&self, secs: i64) -> String {
        jiff::Timestamp::from_second(secs)
            .map(|ts| {
                ts.to_zoned(self.timezone.clone())
                    .strftime("%Y年%-m月%-d日 %H:%M")
                    .to_string()
            })
            .unwrap_or_default()
    }
}

/// Tencent Cloud's storage domains, where IM keeps the pictures its clients upload.
const DEFAULT_MEDIA_HOSTS: &str = "myqcloud.com,qcloud.com,tencentcos.cn,tencent-cloud.com";

/// The official-account customer-service bridge.
#[derive(Debug, Clone)]
pub struct OaBridgeConfig {
    pub welcome_text: String,
    pub connecting_text: String,
    pub conversation_window_secs: i64,
    /// Agent replies to one follower arriving within this many seconds go as one
    /// customer-service message (0 = each on its own).
    pub merge_secs: i64,
    /// Hosts (and their subdomains) an agent's picture may be downloaded from, to go to WeChat
    /// as a picture: IM's image storage.
    pub media_hosts: Vec<String>,
    /// Subscribe-message fallback when a customer-service message cannot be delivered.
    pub fallback_template_id: Option<String>,
    pub fallback_data: Vec<(String, String)>,
    pub fallback_page: Option<String>,
}

impl OaBridgeConfig {
    /// Whether an agent's picture at `url` may be downloaded: a host of `IM_MEDIA_URL_HOSTS` or
    /// a subdomain of one.
    pub fn media_host_allowed(&self, url: &str) -> bool {
        let Ok(u) = reqwest::Url::parse(url) else {
            return false;
        };
        let Some(host) = u.host_str().map(str::to_ascii_lowercase) else {
            return false;
        };
        matches!(u.scheme(), "https" | "http")
            && self
                .media_hosts
                .iter()
                .any(|h| host == *h || host.ends_with(&format!(".{h}")))
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub mp: Option<WechatApp>,
    pub oa: Option<WechatApp>,
    pub wechat_api_base: String,
    /// How far a push's `timestamp` may be from now (0: not checked). WeChat's retries of one push
    /// come within seconds; an older push is a replay.
    pub push_window_secs: i64,
    /// DynamoDB tables; `None` means the embedded store (local command line only).
    pub table_name: Option<String>,
    pub outbox_table_name: Option<String>,
    pub data_dir: String,
    pub dedupe_ttl_secs: i64,
    pub im: Option<ImConfig>,
    pub notify: Option<NotifyConfig>,
    pub oa_bridge: OaBridgeConfig,
    pub presence_stale_secs: i64,
    pub dispatch_max_attempts: i64,
    /// First pause before a failed send is retried; doubles per attempt (at most 20 s).
    pub dispatch_backoff_ms: u64,
    /// Whole-request timeout of WeChat and IM API calls (above IM's own 3 s).
    pub http_timeout_ms: u64,
    pub outbox_retention_secs: i64,
    pub admin_token: Option<Secret>,
    /// How long an outbox item may stay unfinished before the sweep re-drives it (the delay of
    /// the watch record written with every queued item).
    pub sweep_stale_secs: i64,
    /// How often `wxim serve` runs the sweep (0: never); in AWS the template's schedule does.
    pub sweep_interval_secs: u64,
    /// The SQS queue that keeps verified webhooks the store could not take (`None`: no queue; the
    /// local command line then spools to a file in `data_dir`, Lambda answers 503).
    pub spool_queue_url: Option<String>,
    /// The first pause before a spooled event that still cannot be applied is tried again;
    /// doubles per receive, at most 15 minutes.
    pub spool_retry_secs: u32,
}

pub const DEFAULT_WECHAT_API_BASE: &str = "https://api.weixin.qq.com";
pub const DEFAULT_IM_API_BASE: &str = "https://console.tim.qq.com";
pub const DEFAULT_WELCOME_TEXT: &str =
    "Welcome! Send us a message and one of our agents will answer you here.";
pub const DEFAULT_CONNECTING_TEXT: &str = "Connecting you to an agent, please wait a moment.";
/// The default welcome when no agent is configured: the usual one would promise an answer.
pub const DEFAULT_WELCOME_TEXT_NO_AGENTS: &str = "Thanks for following!";

fn env_prefix(kind: AppKind) -> &'static str {
    match kind {
        AppKind::Mp => "WECHAT_MP_",
        AppKind::Oa => "WECHAT_OA_",
    }
}

/// Reads variables through a lookup function, so tests and `.env` files use the same code.
struct Env<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    /// A set, non-blank value (blank counts as unset: SAM passes empty parameters as "").
    fn opt(&self, var: &str) -> Option<String> {
        (self.get)(var).filter(|v| !v.trim().is_empty())
    }

    fn req(&self, var: &str, why: &str) -> Result<String, ConfigError> {
        self.opt(var)
            .ok_or_else(|| ConfigError::new(var, format!("is required {why}")))
    }

    fn int(&self, var: &str, default: i64, min: i64, max: i64) -> Result<i64, ConfigError> {
        match self.opt(var) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(ConfigError::new(
                    var,
                    format!("must be a whole number from {min} to {max}"),
                )),
            },
        }
    }

    fn url(&self, var: &str, default: &str) -> Result<String, ConfigError> {
        let v = self.opt(var).unwrap_or_else(|| default.to_owned());
        let v = v.trim().trim_end_matches('/').to_owned();
        if !(v.starts_with("https://") || v.starts_with("http://")) {
            return Err(ConfigError::new(
                var,
                "must be an http:// or https:// base URL",
            ));
        }
        Ok(v)
    }
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_lookup(&|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let env = Env { get };
        let mp = Self::wechat_app(&env, AppKind::Mp)?;
        let oa = Self::wechat_app(&env, AppKind::Oa)?;
        let im = Self::im(&env)?;
        let notify = Self::notify(&env)?;
        let oa_bridge = Self::oa_bridge(&env, im.as_ref().is_some_and(|i| !i.agents.is_empty()))?;
        let table_name = env.opt("TABLE_NAME");
        let outbox_table_name = match (&table_name, env.opt("OUTBOX_TABLE_NAME")) {
            (_, Some(o)) => Some(o),
            (Some(t), None) => Some(format!("{t}-outbox")),
            (None, None) => None,
        };
        Ok(Config {
            mp,
            oa,
            wechat_api_base: env.url("WECHAT_API_BASE", DEFAULT_WECHAT_API_BASE)?,
            push_window_secs: env.int("WECHAT_TIMESTAMP_WINDOW_SECS", 300, 0, 86_400)?,
            table_name,
            outbox_table_name,
            data_dir: env.opt("WXIM_DATA_DIR").unwrap_or_else(|| "./.wxim".into()),
            dedupe_ttl_secs: env.int("DEDUPE_TTL_SECS", 86_400, 60, 30 * 86_400)?,
            im,
            notify,
            oa_bridge,
            presence_stale_secs: env.int("PRESENCE_STALE_SECS", 600, 0, 7 * 86_400)?,
            dispatch_max_attempts: env.int("DISPATCH_MAX_ATTEMPTS", 5, 1, 50)?,
            dispatch_backoff_ms: env.int("DISPATCH_BACKOFF_MS", 1000, 0, 20_000)? as u64,
            http_timeout_ms: env.int("HTTP_TIMEOUT_MS", 6000, 100, 60_000)? as u64,
            outbox_retention_secs: env.int(
                "OUTBOX_RETENTION_SECS",
                30 * 86_400,
                3_600,
                365 * 86_400,
            )?,
            admin_token: env.opt("WXIM_ADMIN_TOKEN").map(Secret::new),
            sweep_stale_secs: env.int("SWEEP_STALE_SECS", 600, 120, 86_400)?,
            sweep_interval_secs: env.int("SWEEP_INTERVAL_SECS", 60, 0, 3_600)? as u64,
            spool_queue_url: match env.opt("SPOOL_QUEUE_URL") {
                None => None,
                Some(_) => Some(env.url("SPOOL_QUEUE_URL", "")?),
            },
            spool_retry_secs: env.int("SPOOL_RETRY_SECS", 30, 1, 900)? as u32,
        })
    }

    fn wechat_app(env: &Env<'_>, kind: AppKind) -> Result<Option<WechatApp>, ConfigError> {
        let p = env_prefix(kind);
        let var = |s: &str| format!("{p}{s}");
        let appid = env.opt(&var("APPID"));
        let any_other = ["SECRET", "TOKEN", "AES_KEY", "ALLOW_PLAINTEXT"]
            .iter()
            .find(|s| env.opt(&var(s)).is_some());
        let Some(appid) = appid else {
            if let Some(s) = any_other {
                return Err(ConfigError::new(
                    &var("APPID"),
                    format!("is required because {} is set", var(s)),
                ));
            }
            return Ok(None);
        };
        let why = format!("because {} is set", var("APPID"));
        let secret = Secret::new(env.req(&var("SECRET"), &why)?);
        let token = env.req(&var("TOKEN"), &why)?;
        if !token.chars().all(|c| c.is_ascii_alphanumeric()) || !(3..=32).contains(&token.len()) {
            return Err(ConfigError::new(
                &var("TOKEN"),
                "must be 3 to 32 letters or digits, as the WeChat console requires",
            ));
        }
        let aes_key = env.opt(&var("AES_KEY")).map(|k| Secret::new(k.trim()));
        let crypto = match &aes_key {
            None => None,
            Some(k) => Some(
                MessageCrypto::new(k.expose(), &appid)
                    .map_err(|e| ConfigError::new(&var("AES_KEY"), e.to_string()))?,
            ),
        };
        let allow_plaintext = match env.opt(&var("ALLOW_PLAINTEXT")).as_deref().map(str::trim) {
            None => crypto.is_none(),
            Some("true" | "1" | "yes") => true,
            Some("false" | "0" | "no") => crypto.is_none(),
            Some(_) => {
                return Err(ConfigError::new(
                    &var("ALLOW_PLAINTEXT"),
                    "must be true or false",
                ));
            }
        };
        Ok(Some(WechatApp {
            kind,
            appid,
            secret,
            token: Secret::new(token),
            aes_key,
            crypto,
            allow_plaintext,
        }))
    }

    fn im(env: &Env<'_>) -> Result<Option<ImConfig>, ConfigError> {
        let Some(appid) = env.opt("IM_SDKAPPID") else {
            if env.opt("IM_SECRET_KEY").is_some() {
                return Err(ConfigError::new(
                    "IM_SDKAPPID",
                    "is required because IM_SECRET_KEY is set",
                ));
            }
            return Ok(None);
        };
        let sdkappid = appid
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0 && *n <= u32::MAX as u64)
            .ok_or_else(|| ConfigError::new("IM_SDKAPPID", "must be the numeric SDKAppID"))?;
        let secret_key = Secret::new(env.req("IM_SECRET_KEY", "because IM_SDKAPPID is set")?);
        let admin_user = env
            .opt("IM_ADMIN_USER")
            .unwrap_or_else(|| "administrator".into());
        let list = |var: &str| -> Result<Option<Vec<String>>, ConfigError> {
            let Some(v) = env.opt(var) else {
                return Ok(None);
            };
            let agents: Vec<String> = v
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            if agents.iter().any(|a| a.len() > 32) {
                return Err(ConfigError::new(var, "IM user ids are at most 32 bytes"));
            }
            Ok(Some(agents))
        };
        // `IM_AGENT_ACCOUNTS` is the official account's, from before the mini program had
        // customer service; `IM_AGENT_ACCOUNTS_OA` takes its place when set.
        let agents = match list("IM_AGENT_ACCOUNTS_OA")? {
            Some(a) => a,
            None => list("IM_AGENT_ACCOUNTS")?.unwrap_or_default(),
        };
        let agents_mp = list("IM_AGENT_ACCOUNTS_MP")?.unwrap_or_default();
        Ok(Some(ImConfig {
            sdkappid,
            secret_key,
            admin_user,
            api_base: env.url("IM_API_BASE", DEFAULT_IM_API_BASE)?,
            callback_token: env.opt("IM_CALLBACK_TOKEN").map(Secret::new),
            callback_window_secs: env.int("IM_CALLBACK_WINDOW_SECS", 300, 1, 86_400)?,
            agents,
            agents_mp,
        }))
    }

    fn notify(env: &Env<'_>) -> Result<Option<NotifyConfig>, ConfigError> {
        let Some(template_id) = env.opt("NOTIFY_TEMPLATE_ID") else {
            return Ok(None);
        };
        let app = match env.opt("NOTIFY_APP") {
            None => AppKind::Mp,
            Some(v) => AppKind::parse(v.trim())
                .ok_or_else(|| ConfigError::new("NOTIFY_APP", "must be mp or oa"))?,
        };
        let data = parse_data_patterns(
            "NOTIFY_DATA",
            &env.req("NOTIFY_DATA", "because NOTIFY_TEMPLATE_ID is set")?,
        )?;
        let timezone_name = env
            .opt("NOTIFY_TIMEZONE")
            .unwrap_or_else(|| "Asia/Shanghai".into());
        let timezone = jiff::tz::TimeZone::get(timezone_name.trim()).map_err(|_| {
            ConfigError::new(
                "NOTIFY_TIMEZONE",
                "must be an IANA time zone such as Asia/Shanghai",
            )
        })?;
        let trigger = match env.opt("NOTIFY_TRIGGER").as_deref().map(str::trim) {
            None | Some("after") => NotifyTrigger::AfterSend,
            Some("before") => NotifyTrigger::BeforeSend,
            Some(_) => {
                return Err(ConfigError::new(
                    "NOTIFY_TRIGGER",
                    "must be after or before",
                ));
            }
        };
        let miniprogram_state = match env.opt("NOTIFY_MINIPROGRAM_STATE") {
            None => None,
            Some(s) if ["developer", "trial", "formal"].contains(&s.trim()) => {
                Some(s.trim().to_owned())
            }
            Some(_) => {
                return Err(ConfigError::new(
                    "NOTIFY_MINIPROGRAM_STATE",
                    "must be developer, trial or formal",
                ));
            }
        };
        let quiet_hours = match env.opt("NOTIFY_QUIET_HOURS") {
            None => None,
            Some(v) => Some(parse_quiet_hours(v.trim()).ok_or_else(|| {
                ConfigError::new("NOTIFY_QUIET_HOURS", "must look like 22:00-08:00")
            })?),
        };
        let push_online_is_online = match env.opt("NOTIFY_PUSH_ONLINE").as_deref().map(str::trim) {
            None | Some("online") => true,
            Some("offline") => false,
            Some(_) => {
                return Err(ConfigError::new(
                    "NOTIFY_PUSH_ONLINE",
                    "must be online or offline",
                ));
            }
        };
        let group_at_all = match env.opt("NOTIFY_GROUP_AT_ALL").as_deref().map(str::trim) {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(ConfigError::new(
                    "NOTIFY_GROUP_AT_ALL",
                    "must be true or false",
                ));
            }
        };
        Ok(Some(NotifyConfig {
            app,
            template_id: template_id.trim().to_owned(),
            data,
            page: env.opt("NOTIFY_PAGE"),
            miniprogram_state,
            lang: env.opt("NOTIFY_LANG"),
            debounce_secs: env.int("NOTIFY_DEBOUNCE_SECS", 300, 0, 7 * 86_400)?,
            timezone,
            timezone_name,
            trigger,
            quiet_hours,
            push_online_is_online,
            group_at_all,
            group_at_all_max: env.int("NOTIFY_GROUP_AT_ALL_MAX", 100, 1, 6000)?,
        }))
    }

    /// An official account without agents (no IM, or an empty `IM_AGENT_ACCOUNTS`) is a valid
    /// configuration: the account may serve only subscribe messages (the admin API, offline
    /// notifications with `NOTIFY_APP=oa`). Followers' messages are then kept in the outbox,
    /// recorded as skipped (`no_agent_configured`), and nobody is promised an agent.
    fn oa_bridge(env: &Env<'_>, has_agents: bool) -> Result<OaBridgeConfig, ConfigError> {
        let fallback_template_id = env.opt("OA_FALLBACK_TEMPLATE_ID");
        let fallback_data = match (&fallback_template_id, env.opt("OA_FALLBACK_DATA")) {
            (_, Some(d)) => parse_data_patterns("OA_FALLBACK_DATA", &d)?,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "OA_FALLBACK_DATA",
                    "is required because OA_FALLBACK_TEMPLATE_ID is set",
                ));
            }
            (None, None) => vec![],
        };
        Ok(OaBridgeConfig {
            welcome_text: env.opt("OA_WELCOME_TEXT").unwrap_or_else(|| {
                if has_agents {
                    DEFAULT_WELCOME_TEXT.into()
                } else {
                    DEFAULT_WELCOME_TEXT_NO_AGENTS.into()
                }
            }),
            connecting_text: env
                .opt("OA_CONNECTING_TEXT")
                .unwrap_or_else(|| DEFAULT_CONNECTING_TEXT.into()),
            conversation_window_secs: env.int(
                "OA_CONVERSATION_WINDOW_SECS",
                1_800,
                0,
                7 * 86_400,
            )?,
            // At most 15 s: the dispatcher waits out a burst inside one invocation (its longest
            // pause is 20 s).
            merge_secs: env.int("KF_MERGE_SECS", 3, 0, 15)?,
            media_hosts: env
                .opt("IM_MEDIA_URL_HOSTS")
                .unwrap_or_else(|| DEFAULT_MEDIA_HOSTS.into())
                .split(',')
                .map(|h| h.trim().trim_start_matches('.').to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            fallback_template_id,
            fallback_data,
            fallback_page: env.opt("OA_FALLBACK_PAGE"),
        })
    }

    pub fn app(&self, kind: AppKind) -> Option<&WechatApp> {
        match kind {
            AppKind::Mp => self.mp.as_ref(),
            AppKind::Oa => self.oa.as_ref(),
        }
    }

    /// Every secret value, for the test that greps logs for them.
    pub fn secrets(&self) -> Vec<String> {
        let mut out = vec![];
        for app in [&self.mp, &self.oa].into_iter().flatten() {
            out.push(app.secret.expose().to_owned());
            out.push(app.token.expose().to_owned());
            if let Some(k) = &app.aes_key {
                out.push(k.expose().to_owned());
            }
        }
        if let Some(im) = &self.im {
            out.push(im.secret_key.expose().to_owned());
            if let Some(t) = &im.callback_token {
                out.push(t.expose().to_owned());
            }
        }
        if let Some(t) = &self.admin_token {
            out.push(t.expose().to_owned());
        }
        out.retain(|s| !s.is_empty());
        out
    }
}

/// A JSON object from template keyword to pattern, e.g. `{"thing1":"{sender}"}`.
pub fn parse_data_patterns(var: &str, raw: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let v: serde_json::Value = serde_json::from_str(raw).map_err(|_| {
        ConfigError::new(
            var,
            "must be a JSON object from template keyword to pattern",
        )
    })?;
    let obj = v.as_object().filter(|o| !o.is_empty()).ok_or_else(|| {
        ConfigError::new(
            var,
            "must be a non-empty JSON object from template keyword to pattern",
        )
    })?;
    let mut out = vec![];
    for (k, p) in obj {
        let p = p
            .as_str()
            .ok_or_else(|| ConfigError::new(var, format!("the pattern of {k} must be a string")))?;
        crate::protocol::wechat::render::validate_pattern(k, p)
            .map_err(|e| ConfigError::new(var, e))?;
        out.push((k.clone(), p.to_owned()));
    }
    Ok(out)
}

/// `HH:MM-HH:MM` → minutes after midnight.
fn parse_quiet_hours(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('-')?;
    let mins = |s: &str| -> Option<u32> {
        let (h, m) = s.trim().split_once(':')?;
        let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    let (a, b) = (mins(a)?, mins(b)?);
    (a != b).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(&|k| m.get(k).cloned())
    }

    const MP: [(&str, &str); 3] = [
        ("WECHAT_MP_APPID", "wx1234567890abcdef"),
        ("WECHAT_MP_SECRET", "s3cr3t-value"),
        ("WECHAT_MP_TOKEN", "wxpushtoken2024"),
    ];

    #[test]
    fn empty_environment_is_a_valid_unconfigured_bundle() {
        let c = cfg(&[]).unwrap();
        assert!(c.mp.is_none() && c.oa.is_none() && c.im.is_none() && c.notify.is_none());
        assert_eq!(c.wechat_api_base, DEFAULT_WECHAT_API_BASE);
        assert_eq!(c.data_dir, "./.wxim");
    }

    #[test]
    fn missing_variable_is_named() {
        let e = cfg(&[("WECHAT_MP_APPID", "wx1")]).unwrap_err();
        assert_eq!(e.var, "WECHAT_MP_SECRET");
        let e = cfg(&[("WECHAT_OA_TOKEN", "abc")]).unwrap_err();
        assert_eq!(e.var, "WECHAT_OA_APPID");
        let e = cfg(&[("IM_SECRET_KEY", "k")]).unwrap_err();
        assert_eq!(e.var, "IM_SDKAPPID");
    }

    #[test]
    fn malformed_values_are_named_without_their_value() {
        let mut v = MP.to_vec();
        v.push(("WECHAT_MP_AES_KEY", "short+key"));
        let e = cfg(&v).unwrap_err();
        assert_eq!(e.var, "WECHAT_MP_AES_KEY");
        assert!(!e.to_string().contains("short+key"));
        let e = cfg(&[("IM_SDKAPPID", "abc"), ("IM_SECRET_KEY", "k")]).unwrap_err();
        assert_eq!(e.var, "IM_SDKAPPID");
        let e = cfg(&[("WECHAT_API_BASE", "ftp://x")]).unwrap_err();
        assert_eq!(e.var, "WECHAT_API_BASE");
        let e = cfg(&[("DEDUPE_TTL_SECS", "soon")]).unwrap_err();
        assert_eq!(e.var, "DEDUPE_TTL_SECS");
    }

    #[test]
    fn push_online_and_at_all_choices() {
        let notify = [
            ("NOTIFY_TEMPLATE_ID", "tpl"),
            ("NOTIFY_DATA", r#"{"thing1":"{sender}"}"#),
        ];
        let n = cfg(&notify).unwrap().notify.unwrap();
        assert!(n.push_online_is_online && !n.group_at_all);
        assert_eq!(n.group_at_all_max, 100);
        let mut v = notify.to_vec();
        v.extend([
            ("NOTIFY_PUSH_ONLINE", "offline"),
            ("NOTIFY_GROUP_AT_ALL", "true"),
            ("NOTIFY_GROUP_AT_ALL_MAX", "300"),
        ]);
        let n = cfg(&v).unwrap().notify.unwrap();
        assert!(!n.push_online_is_online && n.group_at_all);
        assert_eq!(n.group_at_all_max, 300);
        for (var, bad) in [
            ("NOTIFY_PUSH_ONLINE", "sometimes"),
            ("NOTIFY_GROUP_AT_ALL", "yes"),
            ("NOTIFY_GROUP_AT_ALL_MAX", "-5"),
        ] {
            let mut v = notify.to_vec();
            v.push((var, bad));
            let e = cfg(&v).unwrap_err();
            assert_eq!(e.var, var);
            assert!(!e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn full_app_with_non_canonical_key() {
        let mut v = MP.to_vec();
        v.push((
            "WECHAT_MP_AES_KEY",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
        ));
        v.push(("WECHAT_API_BASE", "http://127.0.0.1:9/"));
        v.push(("TABLE_NAME", "wxim"));
        let c = cfg(&v).unwrap();
        let app = c.app(AppKind::Mp).unwrap();
        assert!(app.crypto.is_some());
        assert_eq!(c.wechat_api_base, "http://127.0.0.1:9");
        assert_eq!(c.outbox_table_name.as_deref(), Some("wxim-outbox"));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cr3t-value") && !dbg.contains("wxpushtoken2024"));
        assert!(!dbg.contains("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"));
        let secrets = c.secrets();
        for s in [
            "s3cr3t-value",
            "wxpushtoken2024",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
        ] {
            assert!(secrets.iter().any(|x| x == s), "secrets() lists {s}");
        }
    }

    #[test]
    fn an_official_account_without_agents_promises_none() {
        const OA: [(&str, &str); 3] = [
            ("WECHAT_OA_APPID", "wxfedcba0987654321"),
            ("WECHAT_OA_SECRET", "s"),
            ("WECHAT_OA_TOKEN", "oatoken2024"),
        ];
        let c = cfg(&OA).unwrap();
        assert_eq!(c.oa_bridge.welcome_text, DEFAULT_WELCOME_TEXT_NO_AGENTS);
        let mut v = OA.to_vec();
        v.extend([("IM_SDKAPPID", "1400000000"), ("IM_SECRET_KEY", "k")]);
        let c = cfg(&v).unwrap();
        assert_eq!(c.oa_bridge.welcome_text, DEFAULT_WELCOME_TEXT_NO_AGENTS);
        v.push(("IM_AGENT_ACCOUNTS", "agent_alice, ,agent_bob"));
        let c = cfg(&v).unwrap();
        assert_eq!(c.im.unwrap().agents, ["agent_alice", "agent_bob"]);
        assert_eq!(c.oa_bridge.welcome_text, DEFAULT_WELCOME_TEXT);
        v.push(("OA_WELCOME_TEXT", "欢迎"));
        assert_eq!(cfg(&v).unwrap().oa_bridge.welcome_text, "欢迎");
    }

    #[test]
    fn quiet_hours_parse() {
        assert_eq!(parse_quiet_hours("22:00-08:00"), Some((1320, 480)));
        assert_eq!(parse_quiet_hours("25:00-08:00"), None);
        assert_eq!(parse_quiet_hours("08:00-08:00"), None);
    }

    fn notify_cfg(quiet: Option<(u32, u32)>) -> NotifyConfig {
        NotifyConfig {
            app: AppKind::Mp,
            template_id: "t".into(),
            data: vec![],
            page: None,
            miniprogram_state: None,
            lang: None,
            debounce_secs: 300,
            timezone: jiff::tz::TimeZone::get("Asia/Shanghai").unwrap(),
            timezone_name: "Asia/Shanghai".into(),
            trigger: NotifyTrigger::AfterSend,
            quiet_hours: quiet,
            push_online_is_online: true,
            group_at_all: false,
            group_at_all_max: 100,
        }
    }

    // 1700000000 is 2023-11-15 06:13:20 in Asia/Shanghai (22:13:20 UTC the day before).
    const T: i64 = 1_700_000_000;

    #[test]
    fn quiet_hours_end_today_tomorrow_or_not_at_all() {
        let six = T - 800;
        // 06:00-07:00: ends at 07:00 the same day.
        assert_eq!(notify_cfg(Some((360, 420))).quiet_end(T), Some(six + 3600));
        // 22:00-08:00 wraps midnight; at 06:13 it ends at 08:00 today.
        assert_eq!(
            notify_cfg(Some((1320, 480))).quiet_end(T),
            Some(six + 2 * 3600)
        );
        // 05:00-06:00 is over; no quiet hours configured.
        assert_eq!(notify_cfg(Some((300, 360))).quiet_end(T), None);
        assert_eq!(notify_cfg(None).quiet_end(T), None);
        // 23:00-06:30 seen at 23:30: ends at 06:30 the next day.
        let at_2330 = six + 17 * 3600 + 1800;
        assert_eq!(
            notify_cfg(Some((1380, 390))).quiet_end(at_2330),
            Some(six + 24 * 3600 + 1800)
        );
    }
}
