//! The pure parts of the OpenAI-compatible front end (`http::openai` is
//! its routes): the API's JSON ([`wire`]) and text from a guest's chunks
//! ([`text`]).

pub(crate) mod text;
pub(crate) mod wire;
