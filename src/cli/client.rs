//! The client side of the binary: connects (plaintext, TLS or mTLS) with
//! an API key or a client certificate and prints results for scripts (one
//! line per item). It never takes a key as an argument.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Request, Status};

use super::serve::DEV_ADMIN_KEY_FILE;
use super::{ClientArgs, DetokenizeArgs, ModeArg, RedactArgs, RestoreArgs, TokenizeArgs};
use crate::pb;
use crate::pb::token_vault_client::TokenVaultClient;

/// Adds `authorization: Bearer <key>` to every call, or nothing when the
/// client certificate names the principal.
#[derive(Clone)]
pub struct BearerAuth {
    header: Option<MetadataValue<Ascii>>,
}

impl BearerAuth {
    pub fn new(api_key: &str) -> anyhow::Result<Self> {
        let header = format!("Bearer {api_key}")
            .parse()
            .map_err(|_| anyhow!("the API key must be printable ASCII"))?;
        Ok(BearerAuth {
            header: Some(header),
        })
    }

    /// No `authorization` header: mTLS alone names the caller.
    pub fn none() -> Self {
        BearerAuth { header: None }
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

pub type Client = TokenVaultClient<InterceptedService<Channel, BearerAuth>>;

/// The API key: from `--api-key-file` / `TOKENVAULT_API_KEY_FILE` or
/// `TOKENVAULT_API_KEY` (one of them), else none with a client
/// certificate, else the dev admin key file. `--api-key` is refused: a
/// command line shows in `ps` to every user of the machine.
pub fn api_key(args: &ClientArgs) -> anyhow::Result<Option<String>> {
    if args.api_key.is_some() {
        bail!("--api-key is refused: the command line shows in ps; put the key in a file (--api-key-file or TOKENVAULT_API_KEY_FILE) or in TOKENVAULT_API_KEY");
    }
    let from_env = std::env::var("TOKENVAULT_API_KEY")
        .ok()
        .filter(|key| !key.is_empty());
    match (&args.api_key_file, from_env) {
        (Some(_), Some(_)) => {
            bail!("set one of TOKENVAULT_API_KEY_FILE (--api-key-file) and TOKENVAULT_API_KEY")
        }
        (Some(path), None) => {
            let key = read_key_file(path)
                .with_context(|| format!("cannot read the API key file {}", path.display()))?;
            if key.is_empty() {
                bail!("the API key file {} is empty", path.display());
            }
            Ok(Some(key))
        }
        (None, Some(key)) => Ok(Some(key)),
        (None, None) if args.client_cert.is_some() => Ok(None),
        (None, None) => {
            let path = args.data_dir.join(DEV_ADMIN_KEY_FILE);
            read_key_file(&path).map(Some).with_context(|| {
                format!(
                    "no TOKENVAULT_API_KEY or TOKENVAULT_API_KEY_FILE set, no client certificate and no dev key at {}",
                    path.display()
                )
            })
        }
    }
}

fn read_key_file(path: &Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

pub async fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
    let auth = match api_key(args)? {
        Some(key) => BearerAuth::new(&key)?,
        None => BearerAuth::none(),
    };
    let channel = channel(args).await?;
    Ok(TokenVaultClient::with_interceptor(channel, auth)
        .max_decoding_message_size(64 * 1024 * 1024))
}

/// A connection to `--addr`: TLS for `https://` (verified against
/// `--ca-file`, else the public web roots; with `--client-cert` and
/// `--client-key` for mTLS), plaintext for `http://`.
pub async fn channel(args: &ClientArgs) -> anyhow::Result<Channel> {
    let endpoint = Channel::from_shared(args.addr.clone())
        .map_err(|_| anyhow!("bad server address {:?}", args.addr))?;
    let endpoint = match endpoint.uri().scheme_str() {
        Some("https") => endpoint
            .tls_config(client_tls(args)?)
            .with_context(|| format!("TLS setup for {}", args.addr))?,
        Some("http") => {
            if args.ca_file.is_some() || args.client_cert.is_some() || args.client_key.is_some() {
                bail!(
                    "{}: a CA file or client certificate needs an https:// address",
                    args.addr
                );
            }
            endpoint
        }
        _ => bail!(
            "bad server address {:?}: use http:// or https://",
            args.addr
        ),
    };
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", args.addr))
}

/// The client side of TLS: the roots to trust and, for mTLS, the identity.
fn client_tls(args: &ClientArgs) -> anyhow::Result<ClientTlsConfig> {
    let read = |what: &str, path: &Path| {
        std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
    };
    let tls = match &args.ca_file {
        Some(path) => {
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("the CA file", path)?))
        }
        None => ClientTlsConfig::new().with_webpki_roots(),
    };
    match (&args.client_cert, &args.client_key) {
        (Some(cert), Some(key)) => Ok(tls.identity(Identity::from_pem(
            read("the client certificate", cert)?,
            read("the client key", key)?,
        ))),
        (None, None) => Ok(tls),
        (Some(_), None) => bail!("--client-cert needs --client-key (TOKENVAULT_CLIENT_KEY)"),
        (None, Some(_)) => bail!("--client-key needs --client-cert (TOKENVAULT_CLIENT_CERT)"),
    }
}

/// One line for a failed call: the gRPC code and the server's message.
pub fn call_error(status: Status) -> anyhow::Error {
    anyhow!("{:?}: {}", status.code(), status.message())
}

pub async fn tokenize(args: TokenizeArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.client).await?;
    let mode = match args.mode {
        ModeArg::Deterministic => pb::TokenMode::Deterministic,
        ModeArg::Random => pb::TokenMode::Random,
    };
    let items = args
        .values
        .into_iter()
        .map(|value| pb::TokenizeItem {
            value,
            format: args.format.clone(),
            mode: mode as i32,
            ttl_seconds: args.ttl,
        })
        .collect();
    let response = client
        .tokenize(pb::TokenizeRequest {
            subject_id: args.subject,
            items,
        })
        .await
        .map_err(call_error)?;
    for token in response.into_inner().tokens {
        println!("{token}");
    }
    Ok(())
}

pub async fn detokenize(args: DetokenizeArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.client).await?;
    let response = client
        .detokenize(pb::DetokenizeRequest {
            tokens: args.tokens,
            purpose: args.purpose,
        })
        .await
        .map_err(call_error)?;
    for result in response.into_inner().results {
        let status = pb::TokenStatus::try_from(result.status)
            .map(|s| {
                s.as_str_name()
                    .trim_start_matches("TOKEN_STATUS_")
                    .to_string()
            })
            .unwrap_or_else(|_| result.status.to_string());
        println!("{}\t{}\t{}", result.token, status, result.value);
    }
    Ok(())
}

pub async fn redact(args: RedactArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.client).await?;
    let response = client
        .redact_text(pb::RedactTextRequest {
            subject_id: args.subject,
            text: args.text,
            kinds: args.kinds,
        })
        .await
        .map_err(call_error)?;
    println!("{}", response.into_inner().text);
    Ok(())
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.client).await?;
    let response = client
        .restore_text(pb::RestoreTextRequest {
            text: args.text,
            purpose: args.purpose,
            subject_id: args.subject.unwrap_or_default(),
        })
        .await
        .map_err(call_error)?;
    println!("{}", response.into_inner().text);
    Ok(())
}
