// The languages the page speaks: each has a file web/i18n/CODE.js. Named in their own words.
export default {
  en: "English",
  ru: "Русский",
};
