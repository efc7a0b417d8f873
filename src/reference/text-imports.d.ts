// The API reference's assets, imported as text (`with { type: "text" }`): each module is a string.
declare module "swagger-ui-dist/swagger-ui-bundle.js" {
  const text: string;
  export default text;
}
declare module "swagger-ui-dist/swagger-ui.css" {
  const text: string;
  export default text;
}
declare module "*/start.js" {
  const text: string;
  export default text;
}
