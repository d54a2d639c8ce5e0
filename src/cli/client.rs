//! The client side of the binary: connects with an API key and prints
//! results for scripts (one line per item).

use std::path::Path;

use anyhow::{anyhow, Context};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

use super::serve::DEV_ADMIN_KEY_FILE;
use super::{ClientArgs, DetokenizeArgs, ModeArg, RedactArgs, RestoreArgs, TokenizeArgs};
use crate::pb;
use crate::pb::token_vault_client::TokenVaultClient;

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
pub struct BearerAuth {
    header: MetadataValue<Ascii>,
}

impl BearerAuth {
    pub fn new(api_key: &str) -> anyhow::Result<Self> {
        let header = format!("Bearer {api_key}")
            .parse()
            .map_err(|_| anyhow!("the API key must be printable ASCII"))?;
        Ok(BearerAuth { header })
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.header.clone());
        Ok(request)
    }
}

pub type Client = TokenVaultClient<InterceptedService<Channel, BearerAuth>>;

/// The API key from the flag or environment, else the dev admin key file.
pub fn api_key(args: &ClientArgs) -> anyhow::Result<String> {
    if let Some(key) = &args.api_key {
        return Ok(key.clone());
    }
    let path = args.data_dir.join(DEV_ADMIN_KEY_FILE);
    read_key_file(&path).with_context(|| {
        format!(
            "no TOKENVAULT_API_KEY set and no dev key at {}",
            path.display()
        )
    })
}

fn read_key_file(path: &Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

pub async fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
    let auth = BearerAuth::new(&api_key(args)?)?;
    let channel = Channel::from_shared(args.addr.clone())
        .map_err(|_| anyhow!("bad server address {:?}", args.addr))?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", args.addr))?;
    Ok(TokenVaultClient::with_interceptor(channel, auth)
        .max_decoding_message_size(64 * 1024 * 1024))
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
