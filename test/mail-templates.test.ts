// Mail templates: the built-in set renders every message the outbox can
// hold, values are escaped in HTML, and a project's directory replaces
// only the templates it has.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MailTemplates } from "../src/mail/templates.js";

const values = {
  app: "todos.example",
  name: 'Ada <script>alert("x")</script>',
  email: "ada@example.com",
  new_email: "ada@new.example",
  link: "https://todos.example/demo/#reset-password=abc",
};
let dir: string;

// Made when the tests run, not when the file is collected.
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "mail-templates-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("mail templates", () => {
  it.each([
    "verify_email",
    "reset_password",
    "confirm_new_email",
    "email_change_requested",
    "address_in_use",
    "sign_in_link",
  ])("the built-in %s renders a subject, plain text and HTML", (name) => {
    const mail = new MailTemplates().render(name, values);
    expect(mail.subject).toContain("todos.example");
    expect(mail.text.length).toBeGreaterThan(50);
    expect(mail.html).toMatch(/^<p>/);
    expect(mail.text).not.toContain("{{");
    expect(mail.html).not.toContain("<script>");
  });

  it("escapes values in HTML and leaves plain text as it is", () => {
    const mail = new MailTemplates().render("reset_password", values);
    expect(mail.html).toContain("Ada &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;");
    expect(mail.text).toContain(values.name);
    expect(mail.html).toContain(`href="${values.link}"`);
  });

  it("takes a project's own templates where it has them, the built-in ones elsewhere", () => {
    writeFileSync(
      join(dir, "reset_password.txt"),
      "Subject: {{app}}: new password\n\nGo to {{link}}\n",
    );
    const templates = new MailTemplates(dir);
    const own = templates.render("reset_password", values);
    expect(own.subject).toBe("todos.example: new password");
    expect(own.text).toBe(`Go to ${values.link}\n`);
    expect(own.html, "the built-in HTML part stays").toContain("Choose a new password");
    expect(templates.render("verify_email", values).subject).toMatch(/Confirm your email/);
  });

  it("says what is wrong with a template, and where", () => {
    writeFileSync(join(dir, "sign_in_link.txt"), "no subject line here\n");
    writeFileSync(join(dir, "address_in_use.txt"), "Subject: hi {{nickname}}\n\nbody\n");
    const templates = new MailTemplates(dir);
    expect(() => templates.render("sign_in_link", values)).toThrow(
      /sign_in_link\.txt: the first line must be "Subject: \.\.\."/,
    );
    expect(() => templates.render("address_in_use", values)).toThrow(
      /address_in_use\.txt: no value for \{\{nickname\}\}/,
    );
    expect(() => templates.render("no_such_template", values)).toThrow(
      /no mail template no_such_template\.txt/,
    );
    expect(() => new MailTemplates(join(dir, "missing"))).toThrow(/does not exist/);
  });
});
