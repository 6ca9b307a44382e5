//! Images for customer-service messages: WeChat's limits on a temporary image
//! (`cgi-bin/media/upload?type=image`, multipart field `media`), checked before the upload, and
//! the multipart body itself.
//!
//! Limits: the official account's temporary media doc gives images up to 10 MB in PNG, JPEG,
//! JPG or GIF (reference/wechat.md, "Temporary media for image replies"); the mini program's
//! customer-service image upload is held to 2 MB here, a conservative figure (its own limit was
//! not verified). The format is read from the bytes (their magic number), not from a name or a
//! header, and must agree with the content type the image was served with.

use crate::protocol::wechat::app::AppKind;

/// An image format WeChat takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Jpeg,
    Gif,
}

impl ImageFormat {
    pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageFormat::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(ImageFormat::Jpeg)
        } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
            Some(ImageFormat::Gif)
        } else {
            None
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Gif => "image/gif",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpg",
            ImageFormat::Gif => "gif",
        }
    }
}

/// The largest image `app` takes as a customer-service image.
pub fn max_image_bytes(app: AppKind) -> usize {
    match app {
        AppKind::Oa => 10 * 1024 * 1024,
        AppKind::Mp => 2 * 1024 * 1024,
    }
}

/// Why an image cannot go to WeChat as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefused {
    #[error("empty")]
    Empty,
    #[error("too_large")]
    TooLarge,
    #[error("not_an_image")]
    NotAnImage,
    #[error("unsupported_format")]
    Unsupported,
}

/// Checks an image against `app`'s limits before it is uploaded: its size, its format (from its
/// bytes), and that the content type it was served with says image (when there was one).
pub fn check(
    app: AppKind,
    bytes: &[u8],
    content_type: Option<&str>,
) -> Result<ImageFormat, ImageRefused> {
    if bytes.is_empty() {
        return Err(ImageRefused::Empty);
    }
    if bytes.len() > max_image_bytes(app) {
        return Err(ImageRefused::TooLarge);
    }
    if let Some(ct) = content_type {
        let ct = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !ct.starts_with("image/") && ct != "application/octet-stream" {
            return Err(ImageRefused::NotAnImage);
        }
    }
    ImageFormat::sniff(bytes).ok_or(ImageRefused::Unsupported)
}

/// A `multipart/form-data` body with the one field WeChat's upload reads (`media`); returns the
/// content type (with its boundary) and the body. The boundary is checked not to occur in the
/// bytes.
pub fn multipart(bytes: &[u8], format: ImageFormat) -> (String, Vec<u8>) {
    let mut n = 0u32;
    let boundary = loop {
        let b = format!("----wxim-media-{n:08x}");
        if !bytes.windows(b.len()).any(|w| w == b.as_bytes()) {
            break b;
        }
        n += 1;
    };
    let mut body = Vec::with_capacity(bytes.len() + 256);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"media\"; filename=\"image.{}\"\r\nContent-Type: {}\r\n\r\n",
            format.extension(),
            format.mime()
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[test]
    fn images_are_checked_by_size_type_and_bytes() {
        assert_eq!(
            check(AppKind::Oa, PNG, Some("image/png")),
            Ok(ImageFormat::Png)
        );
        assert_eq!(
            check(AppKind::Oa, &[0xFF, 0xD8, 0xFF, 0xE0], None),
            Ok(ImageFormat::Jpeg)
        );
        assert_eq!(
            check(AppKind::Oa, PNG, Some("text/html; charset=utf-8")),
            Err(ImageRefused::NotAnImage)
        );
        assert_eq!(
            check(AppKind::Oa, b"BM\0\0", Some("image/bmp")),
            Err(ImageRefused::Unsupported)
        );
        assert_eq!(check(AppKind::Oa, b"", None), Err(ImageRefused::Empty));
        let big = [PNG, &vec![0u8; 2 * 1024 * 1024]].concat();
        assert_eq!(check(AppKind::Mp, &big, None), Err(ImageRefused::TooLarge));
        assert_eq!(check(AppKind::Oa, &big, None), Ok(ImageFormat::Png));
    }

    #[test]
    fn the_multipart_body_carries_the_bytes_under_media() {
        let (ct, body) = multipart(PNG, ImageFormat::Png);
        let boundary = ct.strip_prefix("multipart/form-data; boundary=").unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.contains("name=\"media\"; filename=\"image.png\""));
        assert!(body.windows(PNG.len()).any(|w| w == PNG));
        assert!(text.ends_with(&format!("\r\n--{boundary}--\r\n")));
    }
}
