//! The words of the pages themselves (labels, buttons, messages) in English, French and
//! Spanish, and the choice of language for a request: `?lang=`, else `Accept-Language`, else
//! the campaign's default. Campaign text (title, summary, page) comes from the campaign's own
//! files; a language without a table here falls back to English.

use crate::domain::{Invalid, InvalidKind, LanguageTag, SignerField};
use serde::Serialize;

/// Every string a page shows that is not the campaign's own text.
#[derive(Debug, Serialize)]
pub(crate) struct Ui {
    pub(crate) campaigns: &'static str,
    pub(crate) no_campaigns: &'static str,
    pub(crate) take_action: &'static str,
    pub(crate) recipients: &'static str,
    pub(crate) preview: &'static str,
    pub(crate) preview_note: &'static str,
    pub(crate) form_title: &'static str,
    pub(crate) required_note: &'static str,
    pub(crate) first_name: &'static str,
    pub(crate) last_name: &'static str,
    pub(crate) email: &'static str,
    pub(crate) email_hint: &'static str,
    pub(crate) postal_code: &'static str,
    pub(crate) city: &'static str,
    pub(crate) country: &'static str,
    pub(crate) language: &'static str,
    pub(crate) message: &'static str,
    pub(crate) message_hint: &'static str,
    pub(crate) chars_left: &'static str,
    pub(crate) consents: &'static str,
    pub(crate) consent_letter: &'static str,
    pub(crate) consent_contact: &'static str,
    pub(crate) honeypot: &'static str,
    pub(crate) submit: &'static str,
    pub(crate) error_summary: &'static str,
    pub(crate) form_expired: &'static str,
    pub(crate) err_required: &'static str,
    pub(crate) err_name: &'static str,
    pub(crate) err_email: &'static str,
    pub(crate) err_email_smtputf8: &'static str,
    pub(crate) err_short_line: &'static str,
    pub(crate) err_line: &'static str,
    pub(crate) err_language: &'static str,
    pub(crate) err_message: &'static str,
    pub(crate) err_consent_letter: &'static str,
    pub(crate) thanks_title: &'static str,
    pub(crate) thanks_signed: &'static str,
    pub(crate) thanks_check_email: &'static str,
    pub(crate) back: &'static str,
    pub(crate) confirm_title: &'static str,
    pub(crate) confirm_intro: &'static str,
    pub(crate) confirm_button: &'static str,
    pub(crate) confirmed_title: &'static str,
    pub(crate) confirmed_text: &'static str,
    pub(crate) already_confirmed: &'static str,
    pub(crate) link_invalid_title: &'static str,
    pub(crate) link_invalid_text: &'static str,
    pub(crate) placeholder_first: &'static str,
    pub(crate) placeholder_last: &'static str,
}

static EN: Ui = Ui {
    campaigns: "Current actions",
    no_campaigns: "There is no action to sign at the moment.",
    take_action: "Take action",
    recipients: "Your letter goes to",
    preview: "Read the letter",
    preview_note: "Each authority receives its own copy, signed with your name.",
    form_title: "Enter your details",
    required_note: "Fields marked * are required.",
    first_name: "First name",
    last_name: "Last name",
    email: "Email",
    email_hint: "Replies from the authorities come to this address. The letter shows it as the address to reply to.",
    postal_code: "Postal code",
    city: "City",
    country: "Country",
    language: "Language of your letter",
    message: "Personal message (optional)",
    message_hint: "Added to your letter, at most 2,000 characters.",
    chars_left: "characters left",
    consents: "Your consent",
    consent_letter: "Send this letter in my name to the authorities listed above.",
    consent_contact: "I would like to hear from the organisation about this and other actions. I can unsubscribe at any time.",
    honeypot: "Leave this field empty",
    submit: "Sign and send my letter",
    error_summary: "Please check the highlighted fields",
    form_expired: "This form had expired. Please check your details and send it again.",
    err_required: "Please fill in this field.",
    err_name: "Use at most 100 characters, without < or >.",
    err_email: "Enter an email address like name@example.org.",
    err_email_smtputf8: "This address has a character before the @ that our mail server cannot carry. Please use an address with only the letters a to z, digits and . _ - + before the @.",
    err_short_line: "Use at most 20 characters.",
    err_line: "Use at most 100 characters on one line.",
    err_language: "Choose one of the languages offered.",
    err_message: "Use at most 2,000 characters.",
    err_consent_letter: "Tick this box so we can send the letter in your name.",
    thanks_title: "Thank you",
    thanks_signed: "Your letters are on their way to the authorities. Thank you for taking action.",
    thanks_check_email: "We have sent you an email. Please open the link in it to confirm: your letters are sent only once you have confirmed. If you had already confirmed, there is nothing more to do.",
    back: "Back to the action",
    confirm_title: "Confirm your signature",
    confirm_intro: "Press the button to confirm that you want these letters sent in your name.",
    confirm_button: "Confirm my signature",
    confirmed_title: "Thank you for confirming",
    confirmed_text: "Your letters are on their way to the authorities.",
    already_confirmed: "You had already confirmed this signature: your letters are on their way.",
    link_invalid_title: "This link no longer works",
    link_invalid_text: "It may have expired, or a newer email replaced it. You can sign again to receive a new link.",
    placeholder_first: "[Your",
    placeholder_last: "name]",
};

static FR: Ui = Ui {
    campaigns: "Actions en cours",
    no_campaigns: "Aucune action n'est ouverte pour le moment.",
    take_action: "Agir",
    recipients: "Votre lettre sera envoyée à",
    preview: "Lire la lettre",
    preview_note: "Chaque autorité reçoit son propre exemplaire, signé de votre nom.",
    form_title: "Vos coordonnées",
    required_note: "Les champs marqués d'un * sont obligatoires.",
    first_name: "Prénom",
    last_name: "Nom",
    email: "Courriel",
    email_hint: "Les réponses des autorités arrivent à cette adresse. La lettre l'indique comme adresse de réponse.",
    postal_code: "Code postal",
    city: "Ville",
    country: "Pays",
    language: "Langue de votre lettre",
    message: "Message personnel (facultatif)",
    message_hint: "Ajouté à votre lettre, 2 000 caractères au plus.",
    chars_left: "caractères restants",
    consents: "Votre consentement",
    consent_letter: "Envoyer cette lettre en mon nom aux autorités indiquées ci-dessus.",
    consent_contact: "Je souhaite recevoir des nouvelles de l'organisation sur cette action et d'autres. Je peux me désabonner à tout moment.",
    honeypot: "Laissez ce champ vide",
    submit: "Signer et envoyer ma lettre",
    error_summary: "Veuillez vérifier les champs signalés",
    form_expired: "Ce formulaire avait expiré. Vérifiez vos coordonnées et envoyez-le de nouveau.",
    err_required: "Veuillez remplir ce champ.",
    err_name: "Au plus 100 caractères, sans < ni >.",
    err_email: "Saisissez une adresse courriel comme nom@example.org.",
    err_email_smtputf8: "Cette adresse contient avant le @ un caractère que notre serveur de courriel ne peut pas transmettre. Utilisez une adresse qui n'a avant le @ que des lettres de a à z sans accents, des chiffres et . _ - +.",
    err_short_line: "Au plus 20 caractères.",
    err_line: "Au plus 100 caractères, sur une ligne.",
    err_language: "Choisissez l'une des langues proposées.",
    err_message: "Au plus 2 000 caractères.",
    err_consent_letter: "Cochez cette case pour que nous puissions envoyer la lettre en votre nom.",
    thanks_title: "Merci",
    thanks_signed: "Vos lettres partent vers les autorités. Merci d'avoir agi.",
    thanks_check_email: "Nous vous avons envoyé un courriel. Ouvrez le lien qu'il contient pour confirmer : vos lettres ne partent qu'après votre confirmation. Si vous aviez déjà confirmé, vous n'avez rien d'autre à faire.",
    back: "Retour à l'action",
    confirm_title: "Confirmez votre signature",
    confirm_intro: "Appuyez sur le bouton pour confirmer l'envoi de ces lettres en votre nom.",
    confirm_button: "Confirmer ma signature",
    confirmed_title: "Merci pour votre confirmation",
    confirmed_text: "Vos lettres partent vers les autorités.",
    already_confirmed: "Vous aviez déjà confirmé cette signature : vos lettres sont en route.",
    link_invalid_title: "Ce lien n'est plus valide",
    link_invalid_text: "Il a peut-être expiré, ou un courriel plus récent l'a remplacé. Signez de nouveau pour recevoir un nouveau lien.",
    placeholder_first: "[Votre",
    placeholder_last: "nom]",
};

static ES: Ui = Ui {
    campaigns: "Acciones en curso",
    no_campaigns: "No hay ninguna acción abierta en este momento.",
    take_action: "Actuar",
    recipients: "Su carta se enviará a",
    preview: "Leer la carta",
    preview_note: "Cada autoridad recibe su propia copia, firmada con su nombre.",
    form_title: "Sus datos",
    required_note: "Los campos marcados con * son obligatorios.",
    first_name: "Nombre",
    last_name: "Apellidos",
    email: "Correo electrónico",
    email_hint: "Las respuestas de las autoridades llegarán a esta dirección. La carta la indica como dirección de respuesta.",
    postal_code: "Código postal",
    city: "Ciudad",
    country: "País",
    language: "Idioma de su carta",
    message: "Mensaje personal (opcional)",
    message_hint: "Se añade a su carta, 2000 caracteres como máximo.",
    chars_left: "caracteres restantes",
    consents: "Su consentimiento",
    consent_letter: "Enviar esta carta en mi nombre a las autoridades indicadas arriba.",
    consent_contact: "Quiero recibir noticias de la organización sobre esta y otras acciones. Puedo darme de baja en cualquier momento.",
    honeypot: "Deje este campo vacío",
    submit: "Firmar y enviar mi carta",
    error_summary: "Revise los campos señalados",
    form_expired: "Este formulario había caducado. Revise sus datos y envíelo de nuevo.",
    err_required: "Rellene este campo.",
    err_name: "Como máximo 100 caracteres, sin < ni >.",
    err_email: "Escriba una dirección como nombre@example.org.",
    err_email_smtputf8: "Esta dirección tiene antes de la @ un carácter que nuestro servidor de correo no puede transmitir. Use una dirección que antes de la @ solo tenga letras de la a a la z sin acentos, cifras y . _ - +.",
    err_short_line: "Como máximo 20 caracteres.",
    err_line: "Como máximo 100 caracteres, en una línea.",
    err_language: "Elija uno de los idiomas propuestos.",
    err_message: "Como máximo 2000 caracteres.",
    err_consent_letter: "Marque esta casilla para que podamos enviar la carta en su nombre.",
    thanks_title: "Gracias",
    thanks_signed: "Sus cartas van camino de las autoridades. Gracias por actuar.",
    thanks_check_email: "Le hemos enviado un correo. Abra el enlace que contiene para confirmar: sus cartas solo se envían después de su confirmación. Si ya había confirmado, no tiene que hacer nada más.",
    back: "Volver a la acción",
    confirm_title: "Confirme su firma",
    confirm_intro: "Pulse el botón para confirmar que quiere enviar estas cartas en su nombre.",
    confirm_button: "Confirmar mi firma",
    confirmed_title: "Gracias por confirmar",
    confirmed_text: "Sus cartas van camino de las autoridades.",
    already_confirmed: "Ya había confirmado esta firma: sus cartas están en camino.",
    link_invalid_title: "Este enlace ya no es válido",
    link_invalid_text: "Puede que haya caducado o que un correo más reciente lo haya sustituido. Firme de nuevo para recibir un enlace nuevo.",
    placeholder_first: "[Su",
    placeholder_last: "nombre]",
};

/// The page strings for `lang`, English when there is no table for it.
pub(crate) fn ui(lang: &LanguageTag) -> &'static Ui {
    match lang.as_str() {
        "fr" => &FR,
        "es" => &ES,
        _ => &EN,
    }
}

/// A language's own name, for the language selector.
pub(crate) fn native_name(lang: &LanguageTag) -> &str {
    match lang.as_str() {
        "en" => "English",
        "fr" => "Français",
        "es" => "Español",
        other => other,
    }
}

/// The message shown beside a field the domain rejected for `why`.
pub(crate) fn field_error(
    ui: &Ui,
    field: SignerField,
    why: &Invalid,
    was_empty: bool,
) -> &'static str {
    if why.kind() == InvalidKind::NeedsSmtputf8 {
        return ui.err_email_smtputf8;
    }
    if was_empty
        && matches!(
            field,
            SignerField::FirstName | SignerField::LastName | SignerField::Email
        )
    {
        return ui.err_required;
    }
    match field {
        SignerField::FirstName | SignerField::LastName => ui.err_name,
        SignerField::Email => ui.err_email,
        SignerField::PostalCode => ui.err_short_line,
        SignerField::City | SignerField::Country => ui.err_line,
        SignerField::Language => ui.err_language,
        SignerField::Message => ui.err_message,
    }
}

/// Picks the page language: `?lang=` if offered, else the first offered language of
/// `Accept-Language` by its q-values, else `default`.
pub(crate) fn negotiate<'a>(
    offered: &'a [LanguageTag],
    default: &'a LanguageTag,
    query: Option<&str>,
    accept_language: Option<&str>,
) -> &'a LanguageTag {
    let find = |code: &str| {
        LanguageTag::parse(code)
            .ok()
            .and_then(|t| offered.iter().find(|o| **o == t))
    };
    if let Some(found) = query.and_then(find) {
        return found;
    }
    let mut ranked: Vec<(f32, usize, &str)> = accept_language
        .unwrap_or_default()
        .split(',')
        .take(20)
        .enumerate()
        .filter_map(|(i, part)| {
            let mut bits = part.split(';');
            let code = bits.next()?.trim();
            let q = bits
                .find_map(|b| b.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            (q > 0.0 && !code.is_empty()).then_some((q, i, code))
        })
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked
        .iter()
        .find_map(|(_, _, code)| find(code))
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_wins_then_accept_language_by_quality_then_the_default() {
        let tags: Vec<LanguageTag> = ["en", "fr", "es"]
            .iter()
            .map(|t| LanguageTag::parse(t).unwrap())
            .collect();
        let en = &tags[0];
        let pick = |q, a| negotiate(&tags, en, q, a).as_str().to_owned();
        assert_eq!(pick(Some("es"), Some("fr")), "es");
        assert_eq!(pick(Some("de"), Some("fr-CA,fr;q=0.9")), "fr");
        assert_eq!(pick(None, Some("de;q=1, es;q=0.5, fr;q=0.8")), "fr");
        assert_eq!(pick(None, Some("de, *;q=0.1")), "en");
        assert_eq!(pick(None, None), "en");
    }
}
